"""Shared test set-up. Ray-backed fixtures live in the test modules (one cluster per module)."""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Keep Ray quiet and off the network in every test process.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("BENCHMATCH_HOME", str(ROOT / ".pytest_cache" / "benchmatch-home"))
