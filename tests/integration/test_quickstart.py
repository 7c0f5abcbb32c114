"""The main job end to end, as a newcomer runs it: `benchmatch quickstart` in a fresh process."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from results.store import ResultsStore

pytestmark = pytest.mark.ray
ROOT = Path(__file__).resolve().parent.parent.parent


def test_quickstart_runs_measure_learn_match_and_reports_stages(tmp_path):
    results = tmp_path / "results"
    timings = tmp_path / "timings.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmatch", "quickstart", "--results", str(results), "--timings", str(timings)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    for stage in ("[1/4]", "[2/4]", "[3/4]", "[4/4]"):
        assert stage in proc.stdout, f"no progress line {stage}"
    assert "recommendation (objective: cost" in proc.stdout or "no feasible option" in proc.stdout
    df = ResultsStore(results).read()
    assert set(df["hardware"]) == {"local-1c", "local-2c"}
    assert set(df["scenario"]) == {"SingleStream", "MultiStream", "Offline", "Server"}
    assert (df["status"] == "ok").all()
    assert df.groupby("trial_id")["repeat"].nunique().eq(3).all()  # the spread behind every band
    server = df[df["scenario"] == "Server"]
    curves = [json.loads(c) for c in server["server_curve"]]
    assert all(2 <= len(c) <= 7 and c[0]["offered_qps"] < c[-1]["offered_qps"] for c in curves)
    assert all(c[-1]["saturated"] or len(c) == 7 for c in curves)  # a curve stops at its first saturated load
    # A flagged row is said, never silently "ok": the progress names it, the row carries why.
    flagged = df[df["flags"].fillna("") != ""]
    for row in flagged.itertuples():
        assert f"{row.trial_id} r{row.repeat} {row.scenario}: {row.flags}" in proc.stdout or "more flagged rows" in proc.stdout
    assert df["node_id"].str.len().gt(0).all()
    assert (results / "models").is_dir()
    stages = json.loads(timings.read_text())["stages_s"]
    assert {"cluster start", "sweep", "train", "recommend"} <= set(stages)

    # The recommendation of the CLI on the same data is the same answer, as JSON.
    rec = subprocess.run(
        [sys.executable, "-m", "benchmatch", "recommend", "configs/requirements-quickstart.yaml",
         "--results", str(results), "--json"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert rec.returncode in (0, 3), rec.stderr[-2000:]
    ans = json.loads(rec.stdout)
    assert set(ans) >= {"feasible", "options", "diagnosis"}
    for opt in ans["options"]:
        assert opt["predicted"]["latency_p99_ms"] <= 5
        assert sum(opt["hardware"].values()) >= 1
