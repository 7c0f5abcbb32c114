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


_EXIT_STATUS: list[int] = []


def pytest_sessionfinish(session, exitstatus):
    _EXIT_STATUS.append(int(exitstatus))


def pytest_unconfigure(config):
    """End the process with pytest's own status once everything is reported.

    After a full run that started several Ray clusters and Serve in this one process, the
    interpreter's teardown of Ray's and torch's native threads crashed (exit 139, after
    "N passed" had been printed); each module alone exits cleanly. Nothing is measured or
    asserted after this point, so skipping the native teardown changes no outcome.
    """
    if _EXIT_STATUS and os.environ.get("BENCHMATCH_KEEP_TEARDOWN") != "1":
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_EXIT_STATUS[-1])
