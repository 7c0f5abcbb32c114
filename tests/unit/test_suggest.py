"""suggest(): which unmeasured (hardware, configuration) pairs to measure next; the sweep files
that measure exactly them; and the loop that measures them (here: a synthetic oracle, no Ray)
until the recommendation no longer changes."""

from __future__ import annotations

import itertools

import pandas as pd
import pytest
import yaml

from benchmarks.assets import ResolvedAsset
from benchmarks.spec import expand_trials, grids, load_sweep, sweeps_for_pairs
from cluster.hardware import HardwareSpec
from matcher.candidates import candidates_from_results, config_keys
from matcher.recommend import recommend
from matcher.suggest import optimistic_table, refine, suggest
from tests.fixtures.instances import synthetic_result_rows

# local-2c is priced below two local-1c so that threads pay off and one pair is clearly best.
CATALOG = {
    "local-1c": HardwareSpec("local-1c", "cpu", cpu_cores=1, memory_gb=4, price_per_hour_usd=0.0446,
                             price_source="t", local=True),
    "local-2c": HardwareSpec("local-2c", "cpu", cpu_cores=2, memory_gb=8, price_per_hour_usd=0.06,
                             price_source="t", local=True),
    "aws-c7i.2xlarge": HardwareSpec("aws-c7i.2xlarge", "cpu", cpu_cores=8, memory_gb=16, price_per_hour_usd=0.357,
                                    price_source="t"),
}
LOCAL = ["local-1c", "local-2c"]
REQ = {"constraints": {"throughput_qps": 3000, "latency_p99_ms": 8}, "top_k": 1}
GRID = [{"batch_size": b, "threads": t} for b, t in itertools.product((1, 2, 4, 8), (1, 2))]
BEST = "local-2c|batch_size=4,threads=2"


@pytest.fixture(scope="module")
def oracle() -> pd.DataFrame:
    """Ground truth for every pair: what a sweep over the whole grid would have measured."""
    return synthetic_result_rows(hardware=("local-1c", "local-2c", "aws-c7i.2xlarge"), batches=(1, 2, 4, 8),
                                 threads=(1, 2), repeats=2, seed=1, with_accuracy=False)


def keys(rows: pd.DataFrame) -> pd.Series:
    return rows["hardware"].astype(str) + "|" + config_keys(rows)


def measure_with(oracle: pd.DataFrame):
    """The synthetic `measure`: the oracle's rows of exactly the suggested trials."""
    def measure(trials):
        want = {f"{t.hardware}|" + ",".join(f"{k}={v}" for k, v in sorted(t.config.items())) for t in trials}
        return oracle[keys(oracle).isin(want)]
    return measure


def local(rows: pd.DataFrame) -> pd.DataFrame:
    return rows[rows["hardware"].isin(LOCAL)]


def test_the_full_grid_best_is_the_one_here(oracle):
    opt = recommend(REQ, candidates_from_results(local(oracle), CATALOG)).options[0]
    assert (opt.hardware, opt.config) == ({"local-2c": 4}, {"batch_size": 4, "threads": 2})


def test_nothing_to_suggest_when_every_pair_is_measured(oracle):
    s = suggest(REQ, local(oracle), CATALOG, local_only=True)
    assert s.trials == [] and s.grid_size == s.measured == 16
    assert s.best["hardware"] == {"local-2c": 4} and s.best["basis"] == "measured"


def test_the_unmeasured_best_pair_is_suggested_with_its_potential_gain(oracle):
    rows = local(oracle)
    s = suggest(REQ, rows[keys(rows) != BEST], CATALOG, local_only=True)
    assert s.measured == 15 and s.best["objective_value"] > 0.24  # without it, a dearer option wins
    first = s.trials[0]
    assert (first.hardware, first.config, first.reason) == ("local-2c", {"batch_size": 4, "threads": 2}, "improve")
    assert first.potential_improvement == pytest.approx(s.best["objective_value"] - first.optimistic_objective)
    p = first.predicted  # optimistic and conservative sides around the point estimate
    assert p["throughput_qps_bound"] <= p["throughput_qps"] <= p["throughput_qps_optimistic"]
    assert p["latency_p99_ms_optimistic"] <= p["latency_p99_ms"] <= p["latency_p99_ms_bound"]
    assert first.local
    # min_improvement: a gain below 50% of the best is not worth a trial here
    assert suggest(REQ, rows[keys(rows) != BEST], CATALOG, local_only=True, min_improvement=0.5).trials == []


def test_a_best_option_resting_on_predictions_is_confirmed_first(monkeypatch):
    """A hand-made table (the models' part is tested elsewhere): P1's conservative bound already
    wins, so the answer rests on it -> confirm; P2's optimistic side could halve the cost -> improve."""
    nan = float("nan")
    table = pd.DataFrame({
        "hardware": ["local-1c", "local-2c", "local-2c"], "cfg_batch_size": [1, 1, 2],
        "price_per_hour_usd": [0.0446, 0.06, 0.06], "devices": 1.0, "accuracy": nan,
        "basis": ["measured", "predicted", "predicted"],
        "throughput_qps": [100.0, 400.0, 300.0], "throughput_qps_point": [nan, 500.0, 500.0],
        "latency_p99_ms": [5.0, 6.0, 7.0], "latency_p99_ms_point": [nan, 5.0, 5.0]})
    import matcher.suggest as mod

    monkeypatch.setattr(mod, "candidate_table", lambda *a, **k: (table, {}, "mlp"))
    rows = pd.DataFrame({"asset": "mlp", "task": "infer", "status": "ok", "hardware": "local-1c",
                         "cfg_batch_size": [1, 2], "scenario": "Offline"})  # both batch sizes seen somewhere
    req = {"constraints": {"throughput_qps": 800, "latency_p99_ms": 10}}
    s = suggest(req, rows, CATALOG, modelset=object(), hardware=LOCAL, configs=[{"batch_size": 1}, {"batch_size": 2}])
    assert s.best == {"objective_value": 0.12, "cost_per_hour_usd": 0.12, "hardware": {"local-2c": 2},
                      "config": {"batch_size": 1}, "basis": "predicted"}
    assert [(t.reason, t.config, t.potential_improvement) for t in s.trials] == [
        ("confirm", {"batch_size": 1}, None), ("improve", {"batch_size": 2}, pytest.approx(0.06))]
    assert s.trials[1].predicted["throughput_qps_optimistic"] == pytest.approx(500 * 500 / 300)


def test_values_never_measured_are_explored_and_suggestions_are_deterministic(oracle):
    """Batch 4 and 8 were never measured anywhere: the models know nothing of their effect beyond
    batch 2. One trial at the outermost, batch 8, is suggested before any prediction built on them
    is trusted; batch 4 then lies inside the measured range, where the models interpolate."""
    rows = local(oracle)
    a, b = (suggest(REQ, rows[rows["cfg_batch_size"] <= 2], CATALOG, local_only=True, configs=GRID, max_trials=3)
            for _ in range(2))
    # At most max_trials: beyond the exploration, only pairs whose band could beat the best.
    assert a.to_dict() == b.to_dict() and 1 <= len(a.trials) <= 3
    explore = [t.config["batch_size"] for t in a.trials if t.reason == "explore"]
    assert explore == [8] and a.trials[0].reason == "explore"
    assert sum("batch_size=8 was never measured" in n for n in a.notes) == 1
    assert not any("batch_size=4 was never measured" in n for n in a.notes)
    assert all(t.config["batch_size"] > 2 for t in a.trials)  # only unmeasured pairs


def test_only_the_ends_of_a_numeric_gap_and_every_new_text_value_are_explored():
    from matcher.suggest import _gaps

    assert _gaps({1, 4, 8, 32}, {2, 16}) == {1, 32}  # 4 and 8 lie between measured values
    assert _gaps({4, 8}, {1, 2}) == {8}
    assert _gaps({1, 2, 4}, set()) == {1, 4}  # never measured: both ends
    assert _gaps({"onnxruntime", "compile", 8}, {"eager", 1, 16}) == {"onnxruntime", "compile"}
    assert _gaps({True}, {False}) == {True}  # a flag is a category, not a number


def test_hardware_never_measured_without_a_band_is_explored(oracle):
    rows = local(oracle)
    s = suggest(REQ, rows[rows["hardware"] == "local-2c"], CATALOG, hardware=LOCAL, max_trials=2)
    assert s.trials[0].hardware == "local-1c" and s.trials[0].reason == "explore"
    assert any("local-1c was never measured and its predictions have no band" in n for n in s.notes)


def test_hardware_beyond_the_local_profiles_is_flagged(oracle):
    s = suggest(REQ, local(oracle)[keys(local(oracle)) != BEST], CATALOG, max_trials=20)
    assert {t.hardware for t in s.trials} >= {"local-2c"}
    assert all(t.local == CATALOG[t.hardware].local for t in s.trials)
    if any(not t.local for t in s.trials):
        assert any("need a Ray node" in n for n in s.notes)


def test_optimistic_numbers_mirror_the_band():
    t = pd.DataFrame({"hardware": ["a", "b"], "latency_p99_ms": [4.0, 9.0], "latency_p99_ms_point": [2.0, float("nan")],
                      "throughput_qps": [50.0, 10.0], "throughput_qps_point": [100.0, float("nan")],
                      "accuracy": [0.8, 0.5], "accuracy_point": [0.9, float("nan")]})
    o = optimistic_table(t, [0, 1])
    assert o.loc[0, ["latency_p99_ms", "throughput_qps", "accuracy"]].tolist() == pytest.approx([1.0, 200.0, 1.0])
    assert o.loc[1, ["latency_p99_ms", "throughput_qps"]].tolist() == [9.0, 10.0]  # measured rows unchanged
    assert t.loc[0, "latency_p99_ms"] == 4.0  # the caller's table is not modified


def test_grids_split_a_non_grid_set_exactly():
    cfgs = [(("batch_size", 1), ("dtype", "a")), (("batch_size", 1), ("dtype", "b")), (("batch_size", 4), ("dtype", "a"))]
    spaces = grids(cfgs)
    covered = [tuple(zip(s, combo, strict=True)) for s in spaces for combo in itertools.product(*s.values())]
    assert sorted(covered) == sorted(cfgs) and len(spaces) == 2


def test_sweep_files_measure_exactly_the_suggested_trials(oracle, tmp_path):
    rows = local(oracle)
    s = suggest(REQ, rows[rows["cfg_batch_size"] <= 2], CATALOG, configs=GRID, max_trials=7)
    template = load_sweep_template(tmp_path)
    docs = sweeps_for_pairs([(t.hardware, t.config) for t in s.trials], asset=s.asset, task=s.task,
                            results_uri=str(tmp_path / "results"), template=template)
    planned = set()
    for i, doc in enumerate(docs):
        path = tmp_path / f"s{i}.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        spec = load_sweep(path)  # what `benchmatch sweep` reads
        assert spec.repeats == 2 and spec.loadgen.min_duration_ms == 300  # settings from the template
        # 'mlp' is the synthetic oracle's asset: nothing to load, so it is given as resolved.
        for trial in expand_trials(spec, CATALOG, ResolvedAsset(ref=spec.asset, name=spec.asset)):
            planned.add((trial.hardware.name, tuple(sorted(trial.config.items())), trial.repeat))
    wanted = {(t.hardware, tuple(sorted(t.config.items())), r) for t in s.trials for r in range(2)}
    assert planned == wanted  # no trial outside the suggestion, none missing


def load_sweep_template(tmp_path):
    p = tmp_path / "template.yaml"
    p.write_text("name: base\nasset: mlp\nspace: {batch_size: [1]}\nhardware: [local-1c]\nrepeats: 2\n"
                 "loadgen: {min_duration_ms: 300}\n")
    return load_sweep(p)


def test_measuring_the_suggestions_re_derives_the_full_grid_recommendation(oracle):
    """The loop with a synthetic oracle: suggest, measure, re-fit, until nothing is worth measuring.
    It ends at the full grid's recommendation having measured fewer pairs than the grid holds."""
    rows = local(oracle)
    start = rows[keys(rows).isin(["local-1c|batch_size=1,threads=1", "local-2c|batch_size=1,threads=2",
                                  "local-2c|batch_size=8,threads=1"])]
    measured, rounds = refine(REQ, start, measure_with(oracle), CATALOG, hardware=LOCAL, configs=GRID,
                              per_round=2, max_rounds=10)
    assert rounds[0].measured_pairs == 3 and rounds[-1].suggested == 0
    assert [r.measured_pairs for r in rounds] == sorted(r.measured_pairs for r in rounds)
    assert rounds[-1].measured_pairs < 16
    final = recommend(REQ, candidates_from_results(measured, CATALOG)).options[0]
    full = recommend(REQ, candidates_from_results(rows, CATALOG)).options[0]
    assert (final.hardware, final.config, final.cost_per_hour_usd) == (full.hardware, full.config,
                                                                        full.cost_per_hour_usd)
    assert rounds[-1].best["basis"] == "measured" and rounds[-1].best_objective == full.cost_per_hour_usd
