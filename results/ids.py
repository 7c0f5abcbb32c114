"""Trial ids: the deterministic name of an (asset, task, hardware, configuration).

A sweep, a resumed sweep and an import of the same measurement all derive the same id, so the
store de-duplicates them and a resume finds what is done.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any


def trial_id(asset: str, task: str, hardware: str, config: Mapping[str, Any]) -> str:
    """Stable id of a (asset, task, hardware, config): the same trial keeps its id across resumes."""
    blob = json.dumps([asset, task, hardware, dict(config)], sort_keys=True, default=str)
    return f"{hardware}-{hashlib.sha1(blob.encode()).hexdigest()[:10]}"
