"""Public measurements nobody here produced come in with ONE `benchmatch import FILE --mapping MAP`
per file (issue #10 item 5, issue #16): Gavel's isolated training throughputs (nested JSON) and
published MLPerf Inference v4.0 summaries (configs/public/)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmatch.cli import main
from cluster.hardware import HardwareSpec
from matcher.candidates import candidates_from_results
from results.convert import convert_file
from results.importer import import_file
from results.store import ResultsStore

ROOT = Path(__file__).resolve().parents[2]
PUBLIC = ROOT / "configs" / "public"
GAVEL = PUBLIC / "gavel" / "oracle_throughputs_isolated.json"
GAVEL_MAP = ROOT / "configs" / "mappings" / "gavel-oracle-throughputs.yaml"
MLPERF_MAP = ROOT / "configs" / "mappings" / "mlperf-inference-results.yaml"
WIWYNN = PUBLIC / "mlperf-inference-v4.0" / "Wiwynn-summary.csv"
DELL = PUBLIC / "mlperf-inference-v4.0" / "Dell-XE9680-H100x8-summary.csv"


def test_gavel_isolated_throughputs_in_one_command(tmp_path, capsys):
    store = tmp_path / "store"
    assert main(["import", str(GAVEL), "--mapping", str(GAVEL_MAP), "--results", str(store)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("72 rows imported, 0 rejected (sweep 'import-oracle_throughputs_isolated', 72 trials, 1 file")
    assert "6 records left out by the mapping's filter" in out  # A3C and CycleGAN name no batch size
    rows = ResultsStore(store).read()
    assert len(rows) == 72 and set(rows["hardware"]) == {"K80", "P100", "V100"}
    assert set(rows["asset"]) == {"ResNet-18", "ResNet-50", "Transformer", "LM", "Recommendation"}
    assert set(rows["task"]) == {"train"} and set(rows["scenario"]) == {"train"} and set(rows["device_count"]) == {1}
    doc = json.loads(GAVEL.read_text())
    by = rows.set_index(["hardware", "asset", "cfg_batch_size"])["throughput_samples_per_s"]
    # samples/s = Gavel's steps/s x the batch size in the job's name
    assert by[("P100", "ResNet-50", 16)] == pytest.approx(doc["p100"]["ResNet-50 (batch size 16)"]["null"] * 16)
    assert by[("V100", "LM", 5)] == pytest.approx(doc["v100"]["LM (batch size 5)"]["null"] * 5)
    assert by[("K80", "Recommendation", 8192)] == pytest.approx(
        doc["k80"]["Recommendation (batch size 8192)"]["null"] * 8192)
    assert rows["import_source"].str.startswith('oracle_throughputs_isolated.json: $["').all()
    # With the GPUs in a catalog, the matcher builds training candidates from them.
    catalog = {g: HardwareSpec(g, g, device_count=1, price_per_hour_usd=1.0, price_source="test") for g in
               ("K80", "P100", "V100")}
    cands = candidates_from_results(rows, catalog, asset="ResNet-50", task="train")
    assert len(cands) == 12 and cands["throughput_qps"].gt(0).all()


def test_the_gavel_mapping_reads_gavels_whole_file_layout(tmp_path):
    """Gavel's file also holds co-located pairs (lists); the mapping keeps the isolated runs only."""
    full = {"v100": {"ResNet-18 (batch size 16)": {"null": 77.3, "ResNet-18 (batch size 16)": [55.4, 55.5],
                                                    "A3C": [56.9, 7.8]},
                     "A3C": {"ResNet-18 (batch size 16)": [7.8, 56.9], "null": 8.2}}}
    src = tmp_path / "oracle_throughputs.json"
    src.write_text(json.dumps(full))
    rows, rejected, labels = convert_file(src, GAVEL_MAP, {})
    assert rejected == [] and len(rows) == 1 and labels == [['$["v100"]["ResNet-18 (batch size 16)"]["null"]']]
    assert rows[0]["throughput_samples_per_s"] == pytest.approx(77.3 * 16)


def test_the_mlperf_summaries_in_one_command_each(tmp_path):
    store = tmp_path / "store"
    w = import_file(WIWYNN, MLPERF_MAP, results_uri=store, catalog={})
    d = import_file(DELL, MLPERF_MAP, results_uri=store, catalog={})
    assert (w.ok, w.imported, w.added, w.trials) == (True, 16, 16, 7)
    assert (d.ok, d.imported, d.added, d.trials) == (True, 8, 8, 5)
    rows = ResultsStore(store).read()
    wi = rows[rows["sweep_id"] == "import-Wiwynn-summary"].set_index(["asset", "scenario"])
    assert wi.loc[("resnet50", "SingleStream"), "latency_p90_ms"] == pytest.approx(0.937915)
    assert wi.loc[("resnet50", "MultiStream"), "latency_p99_ms"] == pytest.approx(1.083727)
    assert wi.loc[("resnet50", "Offline"), "throughput_samples_per_s"] == pytest.approx(88119.7)
    assert wi.loc[("resnet50", "Offline"), "accuracy"] == pytest.approx(0.76078)
    assert wi.loc[("3d-unet-99", "Offline"), "quality_mlperf_accuracy"] == pytest.approx(0.86236)
    assert pd_isnan(wi.loc[("3d-unet-99", "Offline"), "accuracy"])  # a DICE score is not a top-1 accuracy
    assert set(wi["quality_mlperf_accuracy_direction"]) == {"higher"}
    assert set(wi["accelerator_type"]) == {"L40S"} and set(wi["device_count"]) == {2}
    de = rows[rows["sweep_id"] == "import-Dell-XE9680-H100x8-summary"].set_index(["asset", "scenario"])
    assert de.loc[("bert-99", "Server"), "throughput_samples_per_s"] == pytest.approx(55982.7)
    assert set(de["accelerator_type"]) == {"H100-SXM-80GB"} and set(de["device_count"]) == {8}


def pd_isnan(v) -> bool:
    return v != v


@pytest.mark.parametrize("folder", ["gavel", "mlperf-inference-v4.0"])
def test_each_public_folder_says_where_its_files_come_from(folder):
    readme = (PUBLIC / folder / "README.md").read_text()
    for word in ("Source", "commit", "License", "benchmatch import"):
        assert word in readme
    for f in (PUBLIC / folder).iterdir():
        assert f.stat().st_size < 300_000


def test_gavels_gpus_have_a_catalog_so_its_data_answers(tmp_path, capsys):
    """configs/public/gavel/catalog.yaml prices K80, P100 and V100: the imported rows then answer a
    training request, and every price names where it was read."""
    from cluster.hardware import load_catalog

    catalog_path = ROOT / "configs/public/gavel/catalog.yaml"
    catalog = load_catalog(catalog_path)
    assert set(catalog) == {"K80", "P100", "V100"} and all(s.price_source for s in catalog.values())
    store = tmp_path / "gavel"
    assert main(["import", str(ROOT / "configs/public/gavel/oracle_throughputs_isolated.json"), "--mapping",
                 str(ROOT / "configs/mappings/gavel-oracle-throughputs.yaml"), "--results", str(store),
                 "--catalog", str(catalog_path)]) == 0
    req = tmp_path / "req.yaml"
    req.write_text("asset: ResNet-50\ntask: train\nconstraints: {throughput_qps: 2000}\n")
    capsys.readouterr()
    assert main(["recommend", str(req), "--results", str(store), "--catalog", str(catalog_path), "--json"]) == 0
    ans = json.loads(capsys.readouterr().out)
    assert ans["feasible"] and set(ans["options"][0]["hardware"]) <= {"K80", "P100", "V100"}
    assert ans["options"][0]["predicted"]["throughput_qps"] >= 2000


def test_mlperf_systems_predict_each_other_by_their_peak(tmp_path):
    """configs/public/mlperf-inference-v4.0/catalog.yaml describes both systems. A model fitted on one
    system's Offline throughput predicts the other's from the peak FLOP/s ratio (7915 vs 724 TFLOPS):
    within 10% for BERT (69,898 vs 6,429 samples/s measured) and SDXL. An unscaled model can only
    say 'the same as the system it saw', 10x off."""
    import numpy as np

    from cluster.hardware import load_catalog
    from matcher.models import train_models

    catalog = load_catalog(PUBLIC / "mlperf-inference-v4.0" / "catalog.yaml")
    store = tmp_path / "mlperf"
    for f in (WIWYNN, DELL):
        import_file(f, MLPERF_MAP, results_uri=store, catalog=catalog)
    rows = ResultsStore(store).read()
    assert set(rows["hardware"]) == set(catalog)  # the catalog names exactly the imported systems
    both = ["bert-99", "stable-diffusion-xl", "retinanet", "3d-unet-99"]
    scaled, plain = (train_models(rows, catalog, assets=both, metrics=("throughput_qps",), **o)
                     for o in ({}, {"scale": False, "select": False}))
    loho = {a: scaled.models[(a, "throughput_qps")].cv_["loho"]["mdape"] for a in both}
    assert loho["bert-99"] < 0.1 and loho["stable-diffusion-xl"] < 0.1, loho
    assert np.median(list(loho.values())) < 0.25, loho
    assert all(plain.models[(a, "throughput_qps")].cv_["loho"]["mdape"] > 2 for a in both)
