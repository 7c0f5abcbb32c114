"""Data metrics: what is wrong with a labelled tabular dataset before any hardware is blamed.

`data_report(X, y, sensitive=None, seed=0)` checks five things, each with a documented rule
(docs/measurement.md, "Data metrics"):

- label issues: cleanlab's `find_label_issues` on out-of-sample class probabilities from a
  standardised logistic regression (5-fold `cross_val_predict`), so a sample is never judged by a
  model that saw its own (possibly wrong) label;
- class imbalance: counts, min/max ratio, normalised entropy, the classes under half their fair share;
- subgroup representation (with a sensitive attribute): share per group, min/max ratio, and the
  label distribution inside each group;
- duplicates: exact copies, and near-duplicates closer than DUPLICATE_RATIO x the median
  nearest-neighbour distance on standardised features;
- noisy features: (near-)constant columns, and columns with no evidence of a relation to the label:
  neither a class-mean difference (ANOVA F-test) nor mutual information above a floor.

`python -m benchmarks.data_metrics ASSET` prints the report of an asset's data (train + test) as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

CV_FOLDS = 5
DUPLICATE_RATIO = 0.1  # near-duplicate: distance <= this x the median nearest-neighbour distance
CONSTANT_SHARE = 0.99  # a feature whose most frequent value covers >= 99 % of rows is near-constant
SCALE_FLOOR = 0.1  # standardising divides by at least 0.1 x the median feature deviation (see duplicates)
ANOVA_P = 0.01  # uninformative: class means do not differ at this level (F-test p >= 0.01)...
MI_FLOOR_NATS = 0.05  # ...and the kNN mutual-information estimate is below this (it is never exactly 0)
UNDERREPRESENTED = 0.5  # a class / group under half of its fair share (1/k) is named as under-represented
MAX_LISTED = 1000  # indices and pairs listed in a report; counts are always complete


@dataclass
class LabelIssues:
    count: int | None
    share: float | None
    indices: list[int] = field(default_factory=list)  # ranked, most likely wrong first
    cv_accuracy: float | None = None  # accuracy of the out-of-sample predictions (how good the judge is)
    method: str = ""
    skipped: str = ""  # why the check could not run, when it could not


@dataclass
class ClassBalance:
    counts: dict[str, int]
    min_max_ratio: float
    entropy_balance: float  # Shannon entropy / log(k): 1 = perfectly balanced, 0 = a single class
    minority_class: str
    majority_class: str
    underrepresented: list[str]


@dataclass
class SubgroupBalance:
    attribute: str
    counts: dict[str, int]
    shares: dict[str, float]
    min_max_ratio: float
    minority_group: str
    underrepresented: list[str]
    label_share_by_group: dict[str, dict[str, float]]  # P(label | group): base rates differ -> bias


@dataclass
class Duplicates:
    exact_count: int  # rows that repeat an earlier row exactly
    near_count: int  # pairs within the threshold (exact copies included)
    pairs: list[tuple[int, int]]
    threshold: float
    median_nn_distance: float
    rule: str = f"distance on standardised features <= {DUPLICATE_RATIO} x median nearest-neighbour distance"


@dataclass
class NoisyFeatures:
    constant: list[str]
    uninformative: list[str]
    mutual_information: dict[str, float]  # nats, per feature (scikit-learn's kNN estimator)
    anova_p: dict[str, float | None]  # one-way ANOVA F-test p-value per feature; None for a constant one
    rule: str = (f"constant: most frequent value in >= {CONSTANT_SHARE:.0%} of rows; uninformative: ANOVA F-test "
                 f"p >= {ANOVA_P} and mutual information with the label < {MI_FLOOR_NATS} nats")


@dataclass
class DataReport:
    n_samples: int
    n_features: int
    n_classes: int
    label_issues: LabelIssues
    class_balance: ClassBalance
    duplicates: Duplicates
    noisy_features: NoisyFeatures
    subgroups: SubgroupBalance | None = None
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return _plain(asdict(self))


def data_report(X: Any, y: Any, sensitive: Any = None, *, seed: int = 0, feature_names: Any = None,
                sensitive_name: str = "sensitive", threads: int | None = 1) -> DataReport:
    """Label issues, class and subgroup imbalance, duplicates and noisy features of (X, y).

    `threads` caps the BLAS/OpenMP threads of the fits (None: the libraries' default). One is the
    default: these datasets are small, and on a shared 2-core machine one thread ran the report twice
    as fast as letting BLAS oversubscribe the cores.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=threads):
        return _report(X, y, sensitive, seed, feature_names, sensitive_name)


def _report(X: Any, y: Any, sensitive: Any, seed: int, feature_names: Any, sensitive_name: str) -> DataReport:
    x = np.asarray(X, dtype=np.float64)
    x = x.reshape(len(x), -1)
    labels = np.asarray(y).reshape(-1)
    if len(x) != len(labels) or len(x) < 2:
        raise ValueError(f"X and y must have the same number of rows (at least 2), got {len(x)} and {len(labels)}")
    if not np.isfinite(x).all():
        raise ValueError("X holds NaN or infinite values; impute or drop them before a data report")
    names = [str(n) for n in feature_names] if feature_names is not None and len(feature_names) else \
        [f"x{j}" for j in range(x.shape[1])]
    if len(names) != x.shape[1]:
        raise ValueError(f"feature_names has {len(names)} names for {x.shape[1]} features")
    _, codes = np.unique(labels, return_inverse=True)  # cleanlab wants labels 0..k-1
    groups = None
    if sensitive is not None:
        groups = np.asarray(sensitive).reshape(-1).astype(str)
        if len(groups) != len(x):
            raise ValueError(f"sensitive has {len(groups)} values for {len(x)} rows")
    return DataReport(
        n_samples=len(x), n_features=x.shape[1], n_classes=int(codes.max()) + 1,
        label_issues=label_issues(x, codes, seed=seed),
        class_balance=class_balance(labels),
        duplicates=duplicates(x),
        noisy_features=noisy_features(x, codes, names, seed=seed),
        subgroups=subgroup_balance(groups, labels, sensitive_name) if groups is not None else None,
        seed=seed,
    )


# ------------------------------------------------------------------------------------------ checks


def label_issues(x: np.ndarray, codes: np.ndarray, *, seed: int = 0) -> LabelIssues:
    from cleanlab.filter import find_label_issues
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    counts = np.bincount(codes)
    folds = min(CV_FOLDS, int(counts.min()))
    if len(counts) < 2 or folds < 2:
        return LabelIssues(None, None, skipped=f"needs >= 2 classes with >= 2 samples each; class counts {counts.tolist()}")
    method = (f"cleanlab.filter.find_label_issues(filter_by='prune_by_noise_rate') on {folds}-fold out-of-sample "
              "predict_proba of StandardScaler + LogisticRegression(C=0.1)")
    # C=0.1: strong regularisation fits the wrong labels less. On digits with 5 % flipped labels (the unit
    # test's data) it flags 88 samples at recall 0.88 / precision 0.81, against 117 at 0.89 / 0.62 with
    # scikit-learn's C=1; on clean digits 3 samples against 5. tol=1e-3 halves the time, same accuracy.
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, tol=1e-3, max_iter=300))
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # probabilities, not coefficients, are used
        probs = cross_val_predict(model, x, codes, cv=cv, method="predict_proba")
    ranked = find_label_issues(codes, probs, return_indices_ranked_by="self_confidence")
    return LabelIssues(
        count=len(ranked), share=len(ranked) / len(codes), indices=[int(i) for i in ranked[:MAX_LISTED]],
        cv_accuracy=float((probs.argmax(axis=1) == codes).mean()), method=method,
    )


def class_balance(labels: np.ndarray) -> ClassBalance:
    values, counts = np.unique(labels, return_counts=True)
    names = [str(v) for v in values]
    k = len(values)
    p = counts / counts.sum()
    entropy = float(-(p * np.log(p)).sum() / np.log(k)) if k > 1 else 0.0
    return ClassBalance(
        counts=dict(zip(names, counts.tolist(), strict=True)),
        min_max_ratio=float(counts.min() / counts.max()),
        entropy_balance=entropy,
        minority_class=names[int(counts.argmin())],
        majority_class=names[int(counts.argmax())],
        underrepresented=[n for n, share in zip(names, p, strict=True) if share < UNDERREPRESENTED / k],
    )


def subgroup_balance(groups: np.ndarray, labels: np.ndarray, attribute: str) -> SubgroupBalance:
    values, counts = np.unique(groups, return_counts=True)
    k = len(values)
    shares = counts / counts.sum()
    by_group = {}
    for g in values:
        lv, lc = np.unique(labels[groups == g], return_counts=True)
        by_group[str(g)] = {str(v): float(c / lc.sum()) for v, c in zip(lv, lc, strict=True)}
    return SubgroupBalance(
        attribute=attribute,
        counts=dict(zip(map(str, values), counts.tolist(), strict=True)),
        shares=dict(zip(map(str, values), shares.tolist(), strict=True)),
        min_max_ratio=float(counts.min() / counts.max()),
        minority_group=str(values[int(counts.argmin())]),
        underrepresented=[str(g) for g, s in zip(values, shares, strict=True) if s < UNDERREPRESENTED / k],
        label_share_by_group=by_group,
    )


def duplicates(x: np.ndarray) -> Duplicates:
    from sklearn.neighbors import NearestNeighbors

    exact = int(len(x) - len(np.unique(x, axis=0)))
    # Standardised so that no feature dominates by its unit; the threshold is relative to the data's
    # own typical spacing, so the same rule suits 8x8 images and patient records. The floor on the
    # scale stops a (nearly) constant column, e.g. a border pixel, from blowing a negligible
    # difference up into a large distance.
    std = x.std(axis=0)
    floor = SCALE_FLOOR * float(np.median(std[std > 0])) if (std > 0).any() else 1.0
    z = (x - x.mean(axis=0)) / np.maximum(std, floor)
    nn = NearestNeighbors(n_neighbors=2).fit(z)
    dist, _ = nn.kneighbors(z)
    nearest = dist[:, 1]
    positive = nearest[nearest > 0]
    median = float(np.median(positive)) if len(positive) else 0.0
    threshold = DUPLICATE_RATIO * median
    pairs: set[tuple[int, int]] = set()
    # radius_neighbors finds every partner within the threshold, not only the nearest one.
    _, neigh = nn.radius_neighbors(z, radius=threshold, sort_results=True)
    for i, js in enumerate(neigh):
        pairs.update((i, int(j)) for j in js if j > i)
    ordered = sorted(pairs)
    return Duplicates(exact_count=exact, near_count=len(ordered), pairs=ordered[:MAX_LISTED],
                      threshold=threshold, median_nn_distance=median)


def noisy_features(x: np.ndarray, codes: np.ndarray, names: list[str], *, seed: int = 0) -> NoisyFeatures:
    from sklearn.feature_selection import f_classif, mutual_info_classif

    constant = []
    for j, name in enumerate(names):
        _, counts = np.unique(x[:, j], return_counts=True)
        if counts.max() >= CONSTANT_SHARE * len(x):
            constant.append(name)
    # The F-test sees linear (class-mean) relations and is exact for them; MI also sees the others but
    # its kNN estimate is biased and erratic on near-constant columns. A feature is uninformative only
    # when both find nothing.
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        # f_classif warns (UserWarning, RuntimeWarning) about constant columns; they get p = nan -> None
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", UserWarning)
        _, pvalues = f_classif(x, codes)
    mi = mutual_info_classif(x, codes, random_state=seed)
    anova = {n: (float(p) if np.isfinite(p) else None) for n, p in zip(names, pvalues, strict=True)}
    uninformative = [n for n, v in zip(names, mi, strict=True) if n not in constant and v < MI_FLOOR_NATS
                     and (anova[n] is None or anova[n] >= ANOVA_P)]
    return NoisyFeatures(constant=constant, uninformative=uninformative,
                         mutual_information={n: float(v) for n, v in zip(names, mi, strict=True)}, anova_p=anova)


# ------------------------------------------------------------------------------------------ assets


def asset_dataset(asset: Any, config: dict[str, Any] | None = None) -> dict[str, Any]:
    """An asset's labelled data (train then test rows) as arguments for `data_report`."""
    data = asset.load_data(dict(config or {}), 0)
    if not data.has_labels:
        raise ValueError(f"asset {asset.name!r} has no labelled data (generated inputs): no data report")
    both = data.x_train is not None and data.y_train is not None
    xs = [data.x_train, data.x_test] if both else [data.x_test]
    ys = [data.y_train, data.y_test] if both else [data.y_test]
    out: dict[str, Any] = {
        "X": np.concatenate([t.reshape(len(t), -1).float().cpu().numpy() for t in xs]),
        "y": np.concatenate([t.cpu().numpy() for t in ys]),
        "feature_names": list(data.feature_names) or None,
    }
    parts = [data.sensitive_train, data.sensitive_test] if both else [data.sensitive_test]
    if all(p is not None for p in parts):
        out["sensitive"] = np.concatenate([np.asarray(p) for p in parts])
        out["sensitive_name"] = data.sensitive_name or "sensitive"
    return out


def _plain(obj: Any) -> Any:
    """JSON-ready: numpy scalars to Python, tuples to lists."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.data_metrics",
                                     description="Print the data report of an asset's labelled data as JSON.")
    parser.add_argument("asset", help="asset name (e.g. digits-mlp, hearts-mlp) or module:Object")
    parser.add_argument("--seed", type=int, default=0, help="seed of the cross-validation and MI estimates")
    args = parser.parse_args(argv)
    from benchmarks.assets import get_asset

    try:
        asset = get_asset(args.asset)
        report = data_report(**asset_dataset(asset), seed=args.seed)
    except ValueError as exc:
        print(f"benchmatch: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"asset": args.asset, **report.to_dict()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
