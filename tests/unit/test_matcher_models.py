"""Performance models: fit/predict, conservative bounds, cross-validated error, skops round trip,
tiny data, and predicted candidates."""

from __future__ import annotations

import json
import math
import zipfile

import numpy as np
import pandas as pd
import pytest

import matcher.models as models_module
from cluster.hardware import HardwareSpec
from matcher.candidates import candidates_from_results, merge_candidates
from matcher.errors import ModelError
from matcher.models import (
    TRUSTED_TYPES,
    ModelSet,
    PerformanceModel,
    predict_candidates,
    train_models,
    training_table,
)
from matcher.recommend import recommend
from matcher.requirements import Requirements
from tests.fixtures.instances import synthetic_result_rows

CATALOG = {
    "local-1c": HardwareSpec("local-1c", "cpu", cpu_cores=1, memory_gb=4, price_per_hour_usd=0.0446, price_source="t"),
    "local-2c": HardwareSpec("local-2c", "cpu", cpu_cores=2, memory_gb=8, price_per_hour_usd=0.08925, price_source="t"),
    "aws-c7i.2xlarge": HardwareSpec("aws-c7i.2xlarge", "cpu", cpu_cores=8, memory_gb=16, price_per_hour_usd=0.357,
                                    price_source="t"),
    "H100-SXM": HardwareSpec("H100-SXM", "H100", device_count=1, cpu_cores=16, peak_tflops=989,
                             price_per_hour_usd=6.88, price_source="t"),
    "no-price": HardwareSpec("no-price", "cpu", cpu_cores=4),
}


@pytest.fixture(scope="module")
def rows() -> pd.DataFrame:
    return synthetic_result_rows(hardware=("local-1c", "local-2c"), batches=(1, 2, 4, 8), threads=(1, 2),
                                 repeats=2, seed=3, with_energy=True)


@pytest.fixture(scope="module")
def modelset(rows) -> ModelSet:
    return train_models(rows, CATALOG)


def test_models_fit_every_metric_with_cv_errors(modelset):
    assert {m for _, m in modelset.models} == {"latency_p99_ms", "throughput_qps", "accuracy",
                                                "energy_per_sample_j", "power_w"}
    summary = {r["metric"]: r for r in modelset.summary()}
    for metric in ("latency_p99_ms", "throughput_qps"):
        r = summary[metric]
        assert r["asset"] == "mlp" and r["n"] == 2 * 8 * 2  # hardware x configs x repeats
        for key in ("mdape_heldout_config", "within10_heldout_config", "mdape_loho", "within10_loho"):
            assert r[key] is not None and 0 <= r[key] < 10, (metric, key)
        assert r["mdape_heldout_config"] < 0.5  # the synthetic law is learnable
    m = modelset.models[("mlp", "throughput_qps")]
    assert m.cv_["heldout_config"]["folds"] == 5 and m.cv_["loho"]["folds"] == 2


def test_bounds_are_on_the_conservative_side(rows, modelset):
    X, _ = training_table(rows[rows.asset == "mlp"], CATALOG, "latency_p99_ms")
    for metric, side in (("latency_p99_ms", "upper"), ("energy_per_sample_j", "upper"), ("power_w", "upper"),
                         ("throughput_qps", "lower"), ("accuracy", "lower")):
        point, bound = modelset.models[("mlp", metric)].predict(X, return_bound=True)
        assert np.isfinite(bound).all(), metric
        if side == "upper":
            assert (bound >= point - 1e-12).all(), metric
        else:
            assert (bound <= point + 1e-12).all(), metric
    acc_point, acc_bound = modelset.models[("mlp", "accuracy")].predict(X, return_bound=True)
    assert ((0 <= acc_bound) & (acc_bound <= 1)).all() and ((0 <= acc_point) & (acc_point <= 1)).all()


def test_predict_matches_sklearn_api(rows):
    X, y = training_table(rows, CATALOG, "throughput_qps")
    m = PerformanceModel("throughput_qps", estimator="ridge")
    assert m.get_params()["estimator"] == "ridge"
    m.fit(X, y)
    pred = m.predict(X)
    assert pred.shape == (len(X),) and (pred > 0).all()
    assert np.median(np.abs(pred - y) / y) < 0.5
    with pytest.raises(ModelError, match="estimator must be .auto., .gbr. or .ridge."):
        PerformanceModel("throughput_qps", estimator="forest").fit(X, y)


def test_bound_covers_held_out_configurations(rows):
    # Train without batch size 4 on either hardware; the 90 % upper bound for latency should cover
    # most of the held-out measurements (conformal, so not all, but far more than the point).
    train = rows[rows.cfg_batch_size != 4]
    test = rows[rows.cfg_batch_size == 4]
    ms = train_models(train, CATALOG, metrics=("latency_p99_ms",))
    X, y = training_table(test, CATALOG, "latency_p99_ms")
    point, bound = ms.models[("mlp", "latency_p99_ms")].predict(X, return_bound=True)
    assert np.mean(y <= bound) >= np.mean(y <= point)
    assert np.mean(y <= bound) >= 0.75


def test_band_coverage_is_reported_and_matches_a_direct_count():
    """Coverage: each group's truths against a band calibrated on the other groups' out-of-fold
    scores. The function against a hand count, then on data whose noise the band must learn."""
    scores = np.array([0.1, 0.2, 0.3, 0.4, 5.0, 0.15])
    groups = np.array(["a", "a", "b", "b", "c", "c"])
    # Without "c" the quantile (k > n) is the largest other score, 0.4: c's 5.0 falls outside it.
    assert models_module._coverage(scores, groups, 0.1) == pytest.approx(5 / 6)
    assert models_module._coverage(scores, np.array(["a"] * 6), 0.1) is None
    rows = synthetic_result_rows(hardware=("local-1c", "local-2c", "aws-c7i.2xlarge"), batches=(1, 2, 4, 8, 16, 32),
                                 threads=(1, 2), repeats=3, seed=5)
    summary = {r["metric"]: r for r in train_models(rows, CATALOG, metrics=("latency_p99_ms",)).summary()}
    r = summary["latency_p99_ms"]
    assert r["band"] == 90 and 0.7 <= r["coverage_heldout_config"] <= 1.0 and 0.5 <= r["coverage_loho"] <= 1.0


def test_tiny_data_degrades_honestly():
    tiny = synthetic_result_rows(hardware=("local-1c", "local-2c"), batches=(1, 8), threads=(1, 2), repeats=1,
                                 scenarios=("MultiStream", "Offline"), seed=9)
    ms = train_models(tiny, CATALOG)
    m = ms.models[("mlp", "throughput_qps")]
    assert m.n_ == 8
    summary = {r["metric"]: r for r in ms.summary()}
    assert summary["throughput_qps"]["mdape_loho"] is not None
    assert "largest" in summary["throughput_qps"]["note"]  # 8 residuals cannot give a 90 % guarantee
    assert summary["energy_per_sample_j"]["n"] == 0 and "needs >= 2" in summary["energy_per_sample_j"]["note"]

    one_hw = tiny[tiny.hardware == "local-1c"]
    ms1 = train_models(one_hw, CATALOG, metrics=("throughput_qps",))
    m1 = ms1.models[("mlp", "throughput_qps")]
    assert "only 1 hardware type" in m1.cv_["loho"]["missing"]
    assert ms1.summary()[0]["mdape_loho"] is None
    pred = predict_candidates(ms1, CATALOG, hardware_names=["local-1c", "local-2c"])
    seen = pred[pred.hardware == "local-1c"]
    unseen = pred[pred.hardware == "local-2c"]
    assert np.isfinite(seen["throughput_qps"]).all()
    assert unseen["throughput_qps"].isna().all()  # no LOHO residuals: no bound, so the MILP cannot rely on it
    assert np.isfinite(unseen["throughput_qps_point"]).all()

    one_cfg = tiny[(tiny.cfg_batch_size == 1) & (tiny.cfg_threads == 1)]
    m2 = train_models(one_cfg, CATALOG, metrics=("throughput_qps",)).models[("mlp", "throughput_qps")]
    assert "only 1 configuration" in m2.cv_["heldout_config"]["missing"]

    single = one_cfg[one_cfg.hardware == "local-1c"]
    assert ("mlp", "throughput_qps") in train_models(single, CATALOG, metrics=("throughput_qps",)).skipped


def _two(ms: ModelSet) -> ModelSet:
    # Saving 100-tree ensembles through skops takes ~1 s a model: round-trip two, not five.
    keep = {k: v for k, v in ms.models.items() if k[1] in ("throughput_qps", "accuracy")}
    return ModelSet(models=keep, configs=ms.configs, complexity=ms.complexity, task=ms.task)


def test_skops_round_trip(tmp_path, rows, modelset):
    modelset = _two(modelset)
    modelset.save(tmp_path)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert "modelset.json" in files and all(f.endswith(".skops") or f == "modelset.json" for f in files)
    for f in files:
        if f.endswith(".skops"):
            assert zipfile.is_zipfile(tmp_path / f)  # skops format, not a pickle
    loaded = ModelSet.load(tmp_path)
    X, _ = training_table(rows, CATALOG, "latency_p99_ms")
    for key, m in modelset.models.items():
        a = m.predict(X, return_bound=True)
        b = loaded.models[key].predict(X, return_bound=True)
        np.testing.assert_allclose(a[0], b[0])
        np.testing.assert_allclose(a[1], b[1])
    assert loaded.summary() == modelset.summary()


def test_load_refuses_untrusted_types_and_bad_folders(tmp_path, modelset):
    import operator

    import skops.io as sio
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    _two(modelset).save(tmp_path)
    index = json.loads((tmp_path / "modelset.json").read_text())
    victim = tmp_path / index["models"][0]["file"]
    evil = make_pipeline(FunctionTransformer(operator.neg), Ridge()).fit(np.ones((3, 1)), np.ones(3))
    sio.dump(evil, victim)
    with pytest.raises(ModelError, match=r"refuses to load types outside the trusted list: \['_operator.neg'\]"):
        ModelSet.load(tmp_path)
    assert "_operator.neg" not in TRUSTED_TYPES
    with pytest.raises(ModelError, match="no model set here"):
        ModelSet.load(tmp_path / "empty")


def test_predicted_candidates_merge_and_recommend(rows, modelset):
    pred = predict_candidates(modelset, CATALOG)
    assert set(pred.hardware) == {"local-1c", "local-2c", "aws-c7i.2xlarge"}
    skipped = pred.attrs["skipped_hardware"]
    assert "GPU hardware" in skipped["H100-SXM"] and "no price" in skipped["no-price"]
    assert (pred.basis == "predicted").all() and "cross-conformal" in pred.band_method.iloc[0]
    assert (pred.latency_p99_ms >= pred.latency_p99_ms_point).all()
    assert (pred.throughput_qps <= pred.throughput_qps_point).all()
    assert (pred.price_per_hour_usd[pred.hardware == "aws-c7i.2xlarge"] == 0.357).all()

    measured = candidates_from_results(rows, CATALOG)
    merged = merge_candidates(measured, pred)
    assert len(merged) == len(measured) + 8  # only the unmeasured hardware is predicted
    ans = recommend(Requirements(constraints={"throughput_qps": 20000}, top_k=1), merged).model_dump()
    opt = ans["options"][0]
    if opt["basis"] == "predicted":
        assert "throughput_qps_bound" in opt["predicted"]
        assert opt["predicted"]["throughput_qps_bound"] <= opt["predicted"]["throughput_qps"]
    assert not any(isinstance(v, float) and math.isnan(v) for v in opt["predicted"].values())


def test_predict_for_new_configurations(modelset):
    pred = predict_candidates(modelset, CATALOG, configs=[{"batch_size": 16, "threads": 2}],
                              hardware_names=["local-2c"])
    assert len(pred) == 1 and pred.cfg_batch_size.iloc[0] == 16
    with pytest.raises(ModelError, match="no performance model for asset 'other'"):
        predict_candidates(modelset, CATALOG, asset="other")


def test_recommend_from_a_results_store_with_models(tmp_path, rows, monkeypatch):
    from matcher.errors import NoDataError
    from matcher.workspace import Sources, Workspace
    from results.store import ResultsStore

    store = ResultsStore(tmp_path / "results")
    for _, g in rows.groupby(["sweep_id", "trial_id", "repeat"]):
        store.write(g.to_dict("records"))
    catalog = tmp_path / "hardware.yaml"
    catalog.write_text(
        "hardware:\n"
        "  - {name: local-1c, accelerator_type: cpu, cpu_cores: 1, price_per_hour_usd: 0.0446, price_source: t}\n"
        "  - {name: local-2c, accelerator_type: cpu, cpu_cores: 2, price_per_hour_usd: 0.08925, price_source: t}\n"
        "  - {name: big-8c, accelerator_type: cpu, cpu_cores: 8, price_per_hour_usd: 0.357, price_source: t}\n"
    )
    from cluster.hardware import load_catalog

    ms = train_models(store.read(), load_catalog(catalog), metrics=("latency_p99_ms", "throughput_qps"))
    ms.save(tmp_path / "models")
    req = {"asset": "mlp", "constraints": {"throughput_qps": 2000, "latency_p99_ms": 50}, "top_k": 2}
    results = str(tmp_path / "results")
    measured_only = Workspace.open(Sources(results_uri=results, catalog_path=str(catalog))).recommend(req)
    sources = Sources(results_uri=results, catalog_path=str(catalog), models_dir=str(tmp_path / "models"))
    # Two hardware types measured: predicting a third is off by ~30% (leave-one-hardware-out), over the
    # 25% a prediction may be off and still answer: the model abstains and the answer says so.
    abstaining = Workspace.open(sources).recommend(req)
    assert measured_only["feasible"] and abstaining["feasible"]
    assert measured_only["candidates_considered"] == abstaining["candidates_considered"] == 16
    assert any("8 pairs on big-8c" in n and "leave-one-hardware-out MdAPE" in n for n in abstaining["notes"])
    monkeypatch.setattr(models_module, "ABSTAIN_MDAPE", 0.5)  # a looser threshold admits the model
    with_models = Workspace.open(sources).recommend(req)
    assert with_models["candidates_considered"] == 16 + 8  # big-8c x 8 configurations, predicted
    json.dumps(with_models, allow_nan=False)
    with pytest.raises(NoDataError, match="empty"):
        Workspace.open(Sources(results_uri=str(tmp_path / "nothing-here"), catalog_path=str(catalog))).recommend(req)


def test_a_model_abstains_outside_its_data_and_beyond_its_error(modelset, monkeypatch):
    from matcher.models import without_abstained

    pred = predict_candidates(modelset, CATALOG, configs=[{"batch_size": 4, "threads": 1}, {"batch_size": 64, "threads": 1}],
                              hardware_names=["local-1c"])
    kept, withheld = without_abstained(pred)
    assert list(kept["cfg_batch_size"]) == [4]  # inside the measured range, measured hardware, small error
    assert len(withheld) == 1 and "batch_size=64 is outside the measured range 1..8" in withheld[0]
    monkeypatch.setattr(models_module, "ABSTAIN_MDAPE", 0.0)  # no model is that good: every prediction abstains
    kept, withheld = without_abstained(predict_candidates(modelset, CATALOG, configs=[{"batch_size": 4, "threads": 1}],
                                                          hardware_names=["local-1c"]))
    assert kept.empty and "model too uncertain here: held-out-configuration MdAPE" in withheld[0]


# --- scaling by the hardware's speed, and estimator selection (issue #10, item 5) ---------------

GPUS = {name: HardwareSpec(name, name, device_count=1, cpu_cores=8, peak_tflops=peak, memory_bandwidth_gbps=bw,
                           memory_gb=16, price_per_hour_usd=price, price_source="t")
        for name, peak, bw, price in (("G1", 4.4, 240, 0.45), ("G2", 9.3, 732, 1.46), ("G3", 15.7, 900, 2.48),
                                      ("G4", 31.0, 1500, 4.0))}


def gpu_rows(hardware: tuple[str, ...], seed: int = 0) -> pd.DataFrame:
    """Training rows whose throughput follows peak^0.9 x batch^0.6 (5% noise): a GPU family."""
    rng = np.random.default_rng(seed)
    out = []
    for hw in hardware:
        for b in (16, 32, 64, 128, 256):
            tput = 50.0 * GPUS[hw].peak_tflops ** 0.9 * b ** 0.6 * rng.normal(1.0, 0.05)
            out.append({"sweep_id": "s", "trial_id": f"{hw}-{b}", "repeat": 0, "scenario": "train", "asset": "net",
                        "task": "train", "status": "ok", "hardware": hw, "accelerator_type": hw, "cfg_batch_size": b,
                        "throughput_samples_per_s": tput})
    return pd.DataFrame(out)


def test_a_new_gpu_is_predicted_in_proportion_to_its_peak():
    """Fitted on three GPUs, the model predicts a fourth with twice the largest peak. Scaled by
    peak FLOP/s it starts from 'twice as fast'; unscaled, ridge shrinks toward the GPUs it saw."""
    rows, truth = gpu_rows(("G1", "G2", "G3")), gpu_rows(("G4",), seed=1)
    X, y = training_table(rows, GPUS, "throughput_qps", task="train")
    Xt, yt = training_table(truth, GPUS, "throughput_qps", task="train")
    scaled = PerformanceModel("throughput_qps").fit(X, y)
    plain = PerformanceModel("throughput_qps", scale=False, select=False).fit(X, y)
    assert scaled.scale_ == "peak_tflops" and plain.scale_ is None
    err = {name: float(np.median(np.abs(m.predict(Xt) - yt) / yt)) for name, m in (("scaled", scaled), ("plain", plain))}
    assert err["scaled"] < 0.15 < err["plain"], err
    assert scaled.cv_["loho"]["mdape"] < plain.cv_["loho"]["mdape"]
    _, bound = scaled.predict(Xt, return_bound=True)
    assert (bound <= scaled.predict(Xt)).all()  # throughput: the bound is the lower side
    assert "relative to peak tflops" in scaled.band_method


def test_cores_scale_cpus_and_the_catalog_must_give_the_number_for_every_hardware():
    X, y = training_table(synthetic_result_rows(hardware=("local-1c", "local-2c"), repeats=1), CATALOG,
                          "throughput_qps")
    assert PerformanceModel("throughput_qps").fit(X, y).scale_ == "cpu_cores"  # no peak for these CPUs
    assert PerformanceModel("accuracy").fit(X, np.full(len(y), 0.9)).scale_ is None  # not a speed
    X2 = X.copy()
    X2.loc[X2["hardware"] == "local-2c", "hw_cpu_cores"] = np.nan
    assert PerformanceModel("throughput_qps").fit(X2, y).scale_ is None  # one hardware without cores


def test_selection_keeps_trees_for_a_step_and_takes_the_power_law_for_a_smooth_curve(rows):
    X, y = training_table(rows, CATALOG, "throughput_qps")  # min(threads, cores): a step
    step = PerformanceModel("throughput_qps").fit(X, y)
    Xg, yg = training_table(gpu_rows(("G1", "G2", "G3")), GPUS, "throughput_qps", task="train")
    smooth = PerformanceModel("throughput_qps").fit(Xg, yg)
    for m in (step, smooth):
        tried = m.cv_["heldout_config"]["mdape_by_estimator"]
        assert m.cv_["heldout_config"]["estimator"] == min(tried, key=tried.get)
        assert m.cv_["heldout_config"]["mdape"] == min(tried.values())
    assert step.seen_kind_ == "gbr" and smooth.seen_kind_ == "ridge"
    assert PerformanceModel("throughput_qps", select=False).fit(Xg, yg).seen_kind_ == "gbr"


def test_hardware_without_the_scale_number_abstains(tmp_path):
    ms = train_models(gpu_rows(("G1", "G2", "G3")), GPUS, task="train")
    catalog = {**GPUS, "G5": HardwareSpec("G5", "G5", device_count=1, cpu_cores=8, memory_gb=16,
                                          price_per_hour_usd=3.0, price_source="t")}
    pred = predict_candidates(ms, catalog, hardware_names=["G2", "G5"])
    g5 = pred[pred["hardware"] == "G5"]["abstain_reason"]
    assert g5.str.contains("scales by peak_tflops, which the catalog does not give for G5").all(), list(g5)
    assert np.isfinite(pred["throughput_qps"]).all()  # a number for suggest, never an answer
    # Saved and loaded, the model scales the same way.
    ms.save(tmp_path / "m")
    again = ModelSet.load(tmp_path / "m")
    assert again.models[("net", "throughput_qps")].scale_ == "peak_tflops"
    np.testing.assert_allclose(predict_candidates(again, catalog, hardware_names=["G2", "G5"])["throughput_qps"],
                               pred["throughput_qps"])


def test_a_model_file_from_before_scaling_loads_unscaled_with_trees(tmp_path, modelset):
    _two(modelset).save(tmp_path / "m")
    index = json.loads((tmp_path / "m" / "modelset.json").read_text())
    for e in index["models"]:
        for key in ("scale", "scale_fill", "seen_kind"):
            e["state"].pop(key)
    (tmp_path / "m" / "modelset.json").write_text(json.dumps(index))
    m = ModelSet.load(tmp_path / "m").models[("mlp", "throughput_qps")]
    assert m.scale_ is None and m.seen_kind_ == "gbr"
    index["models"][0]["state"]["scale"] = "clock_ghz"
    (tmp_path / "m" / "modelset.json").write_text(json.dumps(index))
    with pytest.raises(ModelError, match="state.scale"):
        ModelSet.load(tmp_path / "m")


def test_the_scale_is_dropped_where_hardware_does_not_follow_it():
    """Two CPU profiles on one host, a model too small to use the second core: throughput is the
    same on both. Scaled by cores, leave-one-hardware-out would be 2x off; the unscaled model wins
    its own cross-validation and is kept, and both errors are recorded."""
    rows = synthetic_result_rows(hardware=("local-1c", "local-2c"), threads=(1,), repeats=2, seed=5)
    X, y = training_table(rows, CATALOG, "throughput_qps")  # threads=1: local-2c gains nothing
    m = PerformanceModel("throughput_qps").fit(X, y)
    tried = m.cv_["loho"]["mdape_by_scale"]
    assert set(tried) == {"cpu_cores", "none"} and tried["none"] < tried["cpu_cores"]
    assert m.scale_ is None and m.cv_["loho"]["mdape"] == tried["none"]
    assert "relative to" not in m.band_method
