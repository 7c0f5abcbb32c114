"""Model metrics: precision/recall/F1 and fairness against hand-computed values, and on real rows."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from benchmarks.assets import get_asset
from benchmarks.core import run_trial
from benchmarks.model_metrics import (
    ROW_COLUMNS,
    asset_model_metrics,
    classification_metrics,
    fairness_metrics,
    predict_labels,
)
from benchmarks.spec import LoadGenSettings, TrainSettings, TrialSpec
from cluster.hardware import HardwareSpec
from results.schema import BY_NAME

CPU = HardwareSpec(name="test-cpu-2c", accelerator_type="cpu", cpu_cores=2, price_per_hour_usd=0.36, price_source="test")
OFFLINE = LoadGenSettings(scenarios=["Offline"], min_duration_ms=50, min_query_count=8, offline_samples=32)


def test_classification_metrics_by_hand():
    # class 0: P 1/2 R 1/2 F 1/2;  class 1: P 2/3 R 1 F 4/5;  class 2: P 1 R 1/2 F 2/3
    m = classification_metrics([0, 0, 1, 1, 2, 2], [0, 1, 1, 1, 2, 0])
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["precision_macro"] == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    assert m["recall_macro"] == pytest.approx((1 / 2 + 1 + 1 / 2) / 3)
    assert m["f1_macro"] == pytest.approx((1 / 2 + 4 / 5 + 2 / 3) / 3)
    assert m["f1_weighted"] == pytest.approx(m["f1_macro"])  # equal supports


def test_weighted_differs_from_macro_and_never_predicted_class_counts_zero():
    # supports 3 and 1; class 1 is never predicted: precision 0 by convention, recall 0
    m = classification_metrics([0, 0, 0, 1], [0, 0, 0, 0])
    assert m["precision_macro"] == pytest.approx((3 / 4 + 0) / 2)
    assert m["recall_macro"] == pytest.approx((1 + 0) / 2)
    assert m["recall_weighted"] == pytest.approx(3 / 4 * 1 + 1 / 4 * 0)


def test_fairness_known_dp_and_eo():
    y_true = [1, 0, 1, 0, 1, 0, 1, 0]
    y_pred = [1, 1, 0, 0, 1, 0, 0, 0]
    group = ["a"] * 4 + ["b"] * 4
    f = fairness_metrics(y_true, y_pred, group)
    # selection rate a = 2/4, b = 1/4; TPR a = b = 1/2; FPR a = 1/2, b = 0
    assert f["selection_rate_by_group"] == {"a": 0.5, "b": 0.25}
    assert f["fairness_dp_diff"] == pytest.approx(0.25)
    assert f["fairness_eo_diff"] == pytest.approx(0.5)
    assert f["accuracy_by_group"] == {"a": 0.5, "b": 0.75}
    assert f["accuracy_worst_group"] == 0.5 and f["worst_group"] == "a"
    assert f["groups"] == {"a": 4, "b": 4}


def test_fairness_missing_where_undefined():
    multi = fairness_metrics([0, 1, 2, 2], [0, 1, 2, 1], [0, 0, 1, 1])
    assert multi["fairness_dp_diff"] is None and multi["fairness_eo_diff"] is None
    assert multi["selection_rate_by_group"] is None and multi["accuracy_by_group"] == {"0": 1.0, "1": 0.5}
    no_positives_in_b = fairness_metrics([1, 0, 0, 0], [1, 0, 1, 0], ["a", "a", "b", "b"])
    assert no_positives_in_b["fairness_eo_diff"] is None  # TPR of b undefined
    assert no_positives_in_b["fairness_dp_diff"] == pytest.approx(0.0)
    one_group = fairness_metrics([1, 0], [1, 1], ["a", "a"])
    assert one_group["fairness_dp_diff"] is None and one_group["accuracy_worst_group"] == 0.5


def test_bad_lengths_name_the_problem():
    with pytest.raises(ValueError, match="equal length"):
        classification_metrics([0, 1], [0])
    with pytest.raises(ValueError, match="sensitive"):
        fairness_metrics([0, 1], [0, 1], ["a"])


def test_new_columns_are_in_the_schema():
    assert set(ROW_COLUMNS) <= set(BY_NAME)
    assert BY_NAME["sensitive_attribute"].dtype == "str"


def test_hearts_data_split_groups_and_blind():
    asset = get_asset("hearts-mlp")
    data = asset.load_data({}, 0)
    assert data.x_train.shape[0] == 212 and data.x_test.shape[0] == 91 and data.sensitive_name == "sex"
    for y, s in ((data.y_test, data.sensitive_test), (data.y_train, data.sensitive_train)):
        assert {(int(a), int(b)) for a, b in zip(s, y, strict=True)} == {(0, 0), (0, 1), (1, 0), (1, 1)}  # stratified
    blind = asset.load_data({"blind": True}, 0)
    assert "sex" in data.feature_names and "sex" not in blind.feature_names
    assert blind.x_test.shape[1] == data.x_test.shape[1] - 1
    assert torch.equal(blind.sensitive_test, data.sensitive_test)  # still evaluated by sex


def test_asset_model_metrics_match_the_predictions():
    asset = get_asset("hearts-mlp")
    data = asset.load_data({}, 0)
    model = asset.prepare_for_inference(asset.build({}), data, {})
    cols = asset_model_metrics(asset, model, data)
    y_pred = predict_labels(asset, model, data.x_test)
    direct = classification_metrics(data.y_test, y_pred)
    fair = fairness_metrics(data.y_test, y_pred, data.sensitive_test)
    assert direct["accuracy"] == pytest.approx(asset.evaluate(model, data)["accuracy"])
    assert cols["f1_macro"] == direct["f1_macro"] and cols["fairness_dp_diff"] == fair["fairness_dp_diff"]
    assert cols["sensitive_attribute"] == "sex" and direct["accuracy"] > 0.75


def test_asset_own_model_metrics_hook_wins():
    class Own:
        def model_metrics(self, model, data):
            return {"f1_macro": 0.5, "not_a_column": 1}

    cols = asset_model_metrics(Own(), None, None)
    assert cols["f1_macro"] == 0.5 and "not_a_column" not in cols and cols["precision_macro"] is None


def _spec(tmp_path, asset, task, config):
    trial_id = f"{asset.rpartition(':')[2]}-{task}"  # a file path in the name would escape log_dir
    return TrialSpec(sweep_id="unit", trial_id=trial_id, repeat=0, asset=asset, task=task, hardware=CPU,
                     config=config, seed=1, train=TrainSettings(epochs=2, quality_target=0.7), loadgen=OFFLINE,
                     log_dir=str(tmp_path / "logs"))


def test_hearts_train_row_has_fairness_columns(tmp_path):
    (row,) = run_trial(_spec(tmp_path, "hearts-mlp", "train", {"batch_size": 32, "threads": 1, "epochs": 4}))
    assert row["status"] == "ok", row["error"]
    assert row["sensitive_attribute"] == "sex"
    for col in ("precision_macro", "recall_macro", "f1_macro", "fairness_dp_diff", "fairness_eo_diff",
                "accuracy_worst_group"):
        assert isinstance(row[col], float) and 0.0 <= row[col] <= 1.0, col
    # overall accuracy is a weighted mean of the groups' accuracies, so it cannot fall below the worst
    assert row["accuracy_worst_group"] <= row["accuracy"] + 1e-12


def test_infer_rows_carry_metrics_and_missing_stays_missing(tmp_path):
    (hearts,) = run_trial(_spec(tmp_path, "hearts-mlp", "infer", {"batch_size": 8, "threads": 1}))
    assert hearts["status"] == "ok", hearts["error"]
    assert hearts["sensitive_attribute"] == "sex" and hearts["fairness_dp_diff"] is not None
    assert hearts["accuracy_worst_group"] <= hearts["accuracy"] + 1e-12  # LoadGen's accuracy, same model
    (cnn,) = run_trial(_spec(tmp_path, "tiny-cnn", "infer", {"batch_size": 8, "threads": 1, "width": 4}))
    assert cnn["status"] == "ok", cnn["error"]
    assert all(cnn[c] is None for c in ROW_COLUMNS if c != "sensitive_attribute")
    assert cnn["sensitive_attribute"] == ""


class BrokenMetrics:
    """An asset whose model_metrics raises (the user fixture's Blobs otherwise)."""

    def __new__(cls):
        fixture = get_asset(str(Path(__file__).resolve().parent.parent / "fixtures" / "user_asset.py") + ":Blobs")

        class Broken(type(fixture)):
            def model_metrics(self, model, data):
                raise RuntimeError("metric exploded")

        return Broken()


def test_a_failing_model_metric_fails_the_rows_and_says_why(tmp_path):
    spec = _spec(tmp_path, f"{Path(__file__).resolve()}:BrokenMetrics", "infer", {"batch_size": 8, "threads": 1})
    (row,) = run_trial(spec)
    assert row["status"] == "failed" and "metric exploded" in row["error"]
    assert list((tmp_path / "logs").rglob("error-model_metrics.txt"))
