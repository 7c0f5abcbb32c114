"""Data report: injected label noise, duplicates, imbalance and a noise feature are found; clean data is quiet."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks.data_metrics import class_balance, data_report, duplicates, main, subgroup_balance

N_FLIP, N_DUP, KEEP_OF_CLASS_3 = 0.05, 20, 15


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return x / 16.0, y


@pytest.fixture(scope="module")
def corrupted(digits):
    """Digits with a pure-noise feature, class 3 cut to 15 rows, 5 % labels flipped, 20 jittered copies."""
    x, y = digits
    rng = np.random.default_rng(0)
    x = np.hstack([x, rng.normal(size=(len(x), 1))])  # feature "x64": noise
    keep = np.ones(len(y), bool)
    keep[np.flatnonzero(y == 3)[KEEP_OF_CLASS_3:]] = False
    x, y = x[keep], y[keep].copy()
    n = len(y)
    flipped = rng.choice(n, size=int(N_FLIP * n), replace=False)
    y[flipped] = (y[flipped] + rng.integers(1, 10, size=len(flipped))) % 10  # always a different class
    src = rng.choice(n, size=N_DUP, replace=False)
    # "tiny": 1 % of each feature's own spread (a constant pixel stays constant)
    copies = x[src] + rng.normal(size=(N_DUP, x.shape[1])) * 0.01 * x.std(axis=0)
    x, y = np.vstack([x, copies]), np.concatenate([y, y[src]])
    report = data_report(x, y, seed=0)
    expected_pairs = {(int(s), n + k) for k, s in enumerate(src)}
    return report, set(flipped.tolist()), expected_pairs


def test_flipped_labels_are_found(corrupted):
    report, flipped, _ = corrupted
    found = set(report.label_issues.indices)
    recall = len(found & flipped) / len(flipped)
    precision = len(found & flipped) / len(found)
    assert recall >= 0.6 and precision >= 0.5, (recall, precision, report.label_issues.count)
    assert report.label_issues.share == pytest.approx(report.label_issues.count / report.n_samples)


def test_duplicates_are_paired(corrupted):
    report, _, expected = corrupted
    pairs = {tuple(p) for p in report.duplicates.pairs}
    assert expected <= pairs and len(pairs - expected) <= 2
    assert report.duplicates.exact_count == 0  # jittered, so near but not exact
    assert report.duplicates.threshold == pytest.approx(0.1 * report.duplicates.median_nn_distance)


def test_imbalanced_class_is_named(corrupted):
    balance = corrupted[0].class_balance
    assert balance.minority_class == "3" and balance.underrepresented == ["3"]
    assert balance.min_max_ratio < 0.15


def test_noise_feature_is_flagged(corrupted):
    noisy = corrupted[0].noisy_features
    assert "x64" in noisy.uninformative
    assert "x0" in noisy.constant  # a border pixel that is always blank
    assert not {"x21", "x26", "x33"} & set(noisy.uninformative + noisy.constant)  # strong centre pixels


def test_clean_digits_report_is_quiet(digits):
    report = data_report(*digits, seed=0)
    assert report.label_issues.share < 0.01 and report.label_issues.cv_accuracy > 0.95
    assert report.duplicates.near_count == 0 and report.duplicates.exact_count == 0
    assert report.class_balance.underrepresented == [] and report.class_balance.entropy_balance > 0.99
    assert report.noisy_features.uninformative == []
    assert report.subgroups is None
    json.dumps(report.to_dict())  # JSON-ready


def test_class_and_subgroup_balance_by_hand():
    b = class_balance(np.array(["a"] * 6 + ["b"] * 3 + ["c"]))
    assert b.counts == {"a": 6, "b": 3, "c": 1} and b.min_max_ratio == pytest.approx(1 / 6)
    assert b.minority_class == "c" and b.majority_class == "a" and b.underrepresented == ["c"]  # 0.1 < 0.5/3
    p = np.array([0.6, 0.3, 0.1])
    assert b.entropy_balance == pytest.approx(-(p * np.log(p)).sum() / np.log(3))
    s = subgroup_balance(np.array(["f"] * 2 + ["m"] * 8), np.array([1, 0] + [1] * 2 + [0] * 6), "sex")
    assert s.shares == {"f": 0.2, "m": 0.8} and s.minority_group == "f" and s.underrepresented == ["f"]
    assert s.label_share_by_group == {"f": {"0": 0.5, "1": 0.5}, "m": {"0": 0.75, "1": 0.25}}


def test_exact_duplicates_and_small_classes():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 3))
    x[39] = x[5]
    d = duplicates(x)
    assert d.exact_count == 1 and (5, 39) in d.pairs
    y = np.array([0] * 20 + [1] * 19 + [2])  # one sample of class 2: cannot be cross-validated
    report = data_report(x, y)
    assert report.label_issues.count is None and "class counts" in report.label_issues.skipped


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="same number of rows"):
        data_report(np.zeros((3, 2)), [0, 1])
    with pytest.raises(ValueError, match="NaN"):
        data_report(np.array([[np.nan], [0.0]]), [0, 1])


def test_cli_prints_the_hearts_report_with_subgroups(capsys):
    assert main(["hearts-mlp"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["asset"] == "hearts-mlp" and out["n_samples"] == 303 and out["n_classes"] == 2
    sub = out["subgroups"]
    assert sub["attribute"] == "sex" and sub["counts"] == {"0": 98, "1": 205} and sub["minority_group"] == "0"
    assert sub["label_share_by_group"]["0"]["1"] < sub["label_share_by_group"]["1"]["1"]  # the known bias
    assert out["class_balance"]["minority_class"] == "1"
    assert main(["tiny-cnn"]) == 2 and "no labelled data" in capsys.readouterr().err
