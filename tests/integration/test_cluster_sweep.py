"""A real multi-node heterogeneous Ray cluster on loopback: placement, results, resume, node loss.

One cluster for the whole module (starting Ray costs ~10 s on 2 cores).
"""

import subprocess
import sys
import time
from pathlib import Path

import pytest
import ray
import yaml

from benchmarks.spec import LoadGenSettings, SweepSpec
from benchmarks.sweep import SweepError, run_sweep
from cluster.hardware import NODE_LABEL, load_catalog, local_profiles
from cluster.local import LocalCluster
from results.store import ResultsStore

pytestmark = pytest.mark.ray
ROOT = Path(__file__).resolve().parent.parent.parent

FAST = LoadGenSettings(scenarios=["SingleStream", "Offline"], min_duration_ms=100, min_query_count=16,
                       offline_samples=128)


@pytest.fixture(scope="module")
def cluster():
    catalog = load_catalog()
    lc = LocalCluster(local_profiles(catalog))
    info = lc.start()
    ray.init(address=info.address, logging_level="ERROR", log_to_driver=False)
    yield lc, info, catalog
    lc.shutdown()


def _spec(tmp_path, name, **kw):
    base = dict(name=name, asset="digits-mlp", task="infer", space={"batch_size": [1, 8]},
                hardware=["local-1c", "local-2c"], loadgen=FAST, results_uri=str(tmp_path / "results"))
    base.update(kw)
    return SweepSpec(**base)


def test_nodes_carry_profile_resources_and_labels_on_loopback(cluster):
    _, info, catalog = cluster
    nodes = [n for n in ray.nodes() if n["Alive"]]
    by_profile = {n["Labels"].get(NODE_LABEL): n for n in nodes if n["Labels"].get(NODE_LABEL)}
    assert set(by_profile) == {"local-1c", "local-2c"}
    for name, node in by_profile.items():
        assert node["Resources"][f"accelerator_type:{name}"] == 1
        assert node["Resources"]["CPU"] == catalog[name].cpu_cores
        assert node["NodeManagerAddress"] == "127.0.0.1"
    assert info.dashboard_url.startswith("http://127.0.0.1:")


def test_each_trial_runs_on_a_node_of_its_hardware_and_rows_land_in_the_store(cluster, tmp_path):
    _, _, catalog = cluster
    spec = _spec(tmp_path, "placement")
    report = run_sweep(spec, catalog, progress=lambda m: None)
    assert report.planned == 4 and report.ran == 4 and report.failed == 0
    df = ResultsStore(spec.results_uri).read()
    assert len(df) == 4 * 2  # 4 trials x 2 scenarios
    node_profile = {n["NodeID"]: n["Labels"].get(NODE_LABEL) for n in ray.nodes()}
    for _, row in df.iterrows():
        assert node_profile[row["node_id"]] == row["hardware"], "trial ran on a node of another profile"
        assert row["status"] == "ok"
    assert set(df["hardware"]) == {"local-1c", "local-2c"}
    assert (df["throughput_samples_per_s"].dropna() > 0).all()
    # The sweep's metrics publisher lives on the head: a profile node may die mid-sweep (below).
    from ray.util.state import list_actors

    from benchmarks.sweep import PUBLISHER_NAME
    (actor,) = [a for a in list_actors(filters=[("name", "=", PUBLISHER_NAME)]) if a.state == "ALIVE"]
    head = next(n["NodeID"] for n in ray.nodes() if n["Alive"] and "node:__internal_head__" in n["Resources"])
    assert actor.node_id == head

    # Re-running without --resume refuses (nothing is overwritten); with it, nothing is re-run.
    with pytest.raises(SweepError, match="--resume"):
        run_sweep(spec, catalog, progress=lambda m: None)
    again = run_sweep(spec, catalog, resume=True, progress=lambda m: None)
    assert again.already_done == 4 and again.ran == 0


def test_hardware_without_a_node_fails_fast_naming_it(cluster, tmp_path):
    _, _, catalog = cluster
    spec = _spec(tmp_path, "nogpu", hardware=["local-1c", "aws-g5.xlarge"])
    with pytest.raises(SweepError, match="aws-g5.xlarge"):
        run_sweep(spec, catalog, progress=lambda m: None)


def test_killing_a_worker_node_mid_sweep_loses_and_duplicates_nothing(cluster, tmp_path):
    """The sweep driver runs in its own process (as under `ray job submit`); the node dies under it."""
    lc, info, catalog = cluster
    spec = _spec(tmp_path, "nodeloss", hardware=["local-1c"], space={"batch_size": [1, 2, 4, 8]}, repeats=2,
                 max_retries=3)
    path = tmp_path / "nodeloss.yaml"
    path.write_text(yaml.safe_dump(spec.model_dump()))
    store = ResultsStore(spec.results_uri)
    driver = subprocess.Popen([sys.executable, "-m", "benchmarks", "sweep", str(path), "--address", info.address],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and not store.files("nodeloss") and driver.poll() is None:
        time.sleep(0.2)
    written_before_kill = len(store.files("nodeloss"))
    assert 0 < written_before_kill < 8, "the sweep ended before the node could be killed mid-way"
    lc.kill_node("local-1c")  # a fresh node of the same profile joins in its place
    out, _ = driver.communicate(timeout=300)
    assert driver.returncode == 0, out[-3000:]
    df = store.read("nodeloss")
    assert not df[["trial_id", "repeat", "scenario"]].duplicated().any()
    assert len(store.done("nodeloss")) == 8, out[-3000:]
    assert (df["status"] == "ok").all()
    # Rows from before and after the kill ran on different Ray nodes of the same profile.
    assert df["node_id"].nunique() >= 2


def test_a_user_model_by_relative_path_runs_on_the_cluster_under_its_own_name(cluster, tmp_path, monkeypatch):
    """`asset: my_models/encoder.py:TinyEncoder` as a user writes it, resolved where the command runs."""
    from benchmarks.sweep import prepare

    _, _, catalog = cluster
    (tmp_path / "my_models").mkdir()
    source = (ROOT / "tests" / "fixtures" / "user_asset.py").read_text()
    (tmp_path / "my_models" / "encoder.py").write_text(
        source + '\n\nclass TinyEncoder(Blobs):\n    name = "tiny-encoder"\n')
    sweep = tmp_path / "encoder.yaml"
    sweep.write_text(yaml.safe_dump({
        "name": "encoder", "asset": "my_models/encoder.py:TinyEncoder", "task": "infer",
        "space": {"batch_size": [1, 4]}, "hardware": ["local-1c"], "results_uri": "results",
        "loadgen": FAST.model_dump()}))
    monkeypatch.chdir(tmp_path)
    spec, _ = prepare(str(sweep), catalog_path=None)
    report = run_sweep(spec, catalog, progress=lambda m: None)
    assert report.ran == 2 and report.failed == 0, report.trial_failures
    df = ResultsStore(tmp_path / "results").read()
    assert set(df["asset"]) == {"tiny-encoder"} and (df["status"] == "ok").all()
    assert set(df["asset_ref"]) == {f"{tmp_path / 'my_models' / 'encoder.py'}:TinyEncoder"}


def test_a_trial_that_cannot_run_is_a_failed_row_not_a_retry_and_resume_measures_it_again(cluster, tmp_path):
    _, _, catalog = cluster
    broken = f"{ROOT / 'tests' / 'fixtures' / 'user_asset.py'}:Broken"
    spec = _spec(tmp_path, "broken", asset=broken, hardware=["local-1c"], space={"batch_size": [1]})
    lines: list[str] = []
    report = run_sweep(spec, catalog, progress=lines.append)
    assert report.ran == 1 and report.failed == 1 and report.trial_failures
    assert any("failed; first:" in line and "broken on purpose" in line for line in lines), lines
    assert not any("errored; Tune retries" in line for line in lines)
    again = run_sweep(spec, catalog, resume=True, progress=lambda m: None)
    assert again.already_done == 0 and again.ran == 1  # the failed repeat is measured again, not skipped


def test_an_inconsistent_pair_is_measured_again_on_the_cluster(cluster, tmp_path, monkeypatch):
    """More cores slower than fewer (results.consistency) sends both sides of the pair back to the
    cluster once, after the sweep; the fresh rows replace the old ones. The detection is forced
    here (a quiet machine rarely produces a real one on demand); the re-measurement is real."""
    from benchmarks import sweep as sweep_mod
    from results.consistency import Inconsistency

    _, _, catalog = cluster
    calls = []

    def first_call_finds_one(rows, cores):
        calls.append(len(rows))
        if len(calls) > 1:
            return []
        return [Inconsistency("digits-mlp", "local-2c", "batch_size=8", "local-1c", 1.0, 2.0)]

    monkeypatch.setattr(sweep_mod, "more_cores_slower", first_call_finds_one)
    spec = _spec(tmp_path, "consistency", remeasure=1)
    lines: list[str] = []
    report = run_sweep(spec, catalog, progress=lines.append)
    store = ResultsStore(spec.results_uri)
    df = store.read()
    pair = df[df["cfg_batch_size"] == 8]
    assert sorted(set(pair["hardware"])) == ["local-1c", "local-2c"]
    assert sorted(report.remeasured_for_consistency) == sorted(set(pair["trial_id"]))
    assert any("measuring the pair again" in m for m in lines)
    assert any("0 pairs still inconsistent" in m for m in lines)
    assert report.inconsistent == [] and len(calls) == 2
    # both sides' rows are the second measurement (rows already stored and ok are measured again,
    # not skipped as a retry would skip them): newer than every trial measured once
    assert pair["start_time"].min() > df[df["cfg_batch_size"] == 1]["start_time"].max()
    assert len(df) == 8 and report.failed == 0
