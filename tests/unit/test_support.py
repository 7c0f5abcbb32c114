"""Where a configuration can run (#16 item 8): a model predicts numbers for TensorRT on a Raspberry
Pi as readily as for anything else; no answer may rest on a pair that exists nowhere."""

from __future__ import annotations

import pandas as pd
import pytest

from cluster.hardware import CatalogError, HardwareSpec, _spec_from_entry
from matcher.models import predict_candidates, train_models
from matcher.requirements import parse_requirements
from matcher.support import categorical_options, unsupported
from matcher.workspace import Sources, Workspace


def _hw(name: str, accel: str, price: float, tflops: float, **kw) -> HardwareSpec:
    return HardwareSpec(name=name, accelerator_type=accel, device_count=0 if accel == "cpu" else 1, cpu_cores=4,
                        price_per_hour_usd=price, price_source="test", peak_tflops=tflops,
                        memory_bandwidth_gbps=tflops * 20, **kw)


CATALOG = {"pi": _hw("pi", "cpu", 0.01, 0.02), "nuc": _hw("nuc", "cpu", 0.05, 0.3),
           "jetson": _hw("jetson", "orin", 0.04, 5.0),
           # never measured: a CPU (inherits what the measured CPUs ran) that declares one engine
           "pi5": _hw("pi5", "cpu", 0.02, 0.05, supports={"engine": ["tflite"]}),
           "orin-nx": _hw("orin-nx", "orin", 0.06, 8.0)}  # never measured: the Jetson's accelerator
ENGINES = {"pi": ("tflite", "onnx"), "nuc": ("tflite", "onnx"), "jetson": ("onnx", "tensorrt")}
SPEED = {"pi": 50.0, "nuc": 400.0, "jetson": 1500.0}
FACTOR = {"tflite": 1.0, "onnx": 1.2, "tensorrt": 3.0}


@pytest.fixture(scope="module")
def rows() -> pd.DataFrame:
    out = []
    for hw, engines in ENGINES.items():
        for engine in engines:
            for batch in (1, 2, 4, 8):
                for r in range(3):
                    thr = SPEED[hw] * FACTOR[engine] * batch ** 0.5 * (1 + 0.01 * r)
                    base = {"sweep_id": "s", "trial_id": f"{hw}-{engine}-{batch}", "repeat": r, "asset": "net",
                            "task": "infer", "status": "ok", "hardware": hw, "cfg_engine": engine,
                            "cfg_batch_size": batch, "accuracy": 0.9}
                    out += [{**base, "scenario": "MultiStream", "latency_p99_ms": batch / thr * 1300},
                            {**base, "scenario": "Offline", "throughput_samples_per_s": thr}]
    return pd.DataFrame(out)


def _pairs(df: pd.DataFrame) -> set[tuple[str, str]]:
    return set(zip(df["hardware"].astype(str), df["cfg_engine"].astype(str), strict=True))


def test_the_models_alone_predict_tensorrt_on_a_pi_and_the_workspace_never_offers_it(rows):
    models = train_models(rows, CATALOG)
    raw = predict_candidates(models, CATALOG, asset="net")
    # The defect, still true of the models: a confident TensorRT number for the Pi.
    pi_trt = raw[(raw["hardware"] == "pi") & (raw["cfg_engine"] == "tensorrt")]
    assert len(pi_trt) and pi_trt["abstain_reason"].isna().all()

    ws = Workspace(Sources(results_uri="memory"), catalog=CATALOG, rows=rows, models=models)
    req = {"asset": "net", "constraints": {"throughput_qps": 100}, "top_k": 10}
    ws_req = parse_requirements(req)
    offered = _pairs(ws.candidates(ws_req))
    measured = {(h, e) for h, engines in ENGINES.items() for e in engines}
    # Measured pairs, and predictions only where the configuration runs (those on new hardware may
    # still be withheld by the models' own abstention).
    assert measured <= offered <= measured | {("pi5", "tflite"), ("orin-nx", "onnx"), ("orin-nx", "tensorrt")}
    ans = ws.recommend(req)
    used = {(hw, o["config"]["engine"]) for o in ans["options"] for hw in o["hardware"]}
    assert used <= offered
    note = next(n for n in ws.notes(ws_req) if "engine=tensorrt on" in n)
    assert "nuc, pi" in note and "measured only on jetson" in note
    assert any("engine=onnx on pi5" in n and "tflite" in n for n in ws.notes(ws_req))


def test_support_rules_one_by_one(rows):
    grid = pd.DataFrame([{"hardware": h, "cfg_engine": e, "cfg_batch_size": 4}
                         for h in CATALOG for e in ("tflite", "onnx", "tensorrt")])
    why = dict(zip(zip(grid["hardware"], grid["cfg_engine"], strict=True), unsupported(grid, rows, CATALOG),
                   strict=True))
    assert why["jetson", "tensorrt"] is None and why["pi", "onnx"] is None  # measured there
    assert "never" not in (why["jetson", "tflite"] or "") and "measured only on nuc, pi" in why["jetson", "tflite"]
    assert why["orin-nx", "tensorrt"] is None  # new hardware: what its accelerator type ran
    assert why["orin-nx", "tflite"] is not None  # ... and nothing else
    assert why["pi5", "tflite"] is None and "catalog" in why["pi5", "onnx"]  # declared wins over inherited
    assert categorical_options(rows) == ["cfg_engine"]  # batch size is a range, not support


def test_catalog_supports_is_checked():
    entry = {"name": "x", "accelerator_type": "cpu"}
    assert _spec_from_entry({**entry, "supports": {"engine": ["onnx"]}}, "c").supports == {"engine": ["onnx"]}
    assert _spec_from_entry({**entry, "supports": None}, "c").supports == {}
    for bad in ({"engine": "onnx"}, {"engine": []}, ["onnx"], {"": ["onnx"]}):
        with pytest.raises(CatalogError, match="supports"):
            _spec_from_entry({**entry, "supports": bad}, "c")
