"""Checking a saved model before anything uses it (ModelSet.load).

skops only checks that a file holds trusted *types*. A scikit-learn Tree's node array holds raw
child and feature indices that its Cython prediction code follows without bounds checks, so a
file of trusted types can still crash the process (or loop forever) at the first predict. Every
loaded estimator is therefore checked against what `benchmatch train` writes: the estimator
classes it uses, every array's shape, every tree's node indices, its feature count against the
model's design matrix, and finite numbers; the index file's own fields too.
"""

from __future__ import annotations

import json
import math
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.ensemble import GradientBoostingRegressor
from sklearn.linear_model import Ridge
from sklearn.preprocessing import StandardScaler

from matcher.errors import ModelError
from matcher.metrics import BY_NAME

MAX_MODEL_FILE_BYTES = 64 * 2**20  # uncompressed; a 100-tree depth-2 ensemble is ~3 MB
MAX_MODEL_FILE_MEMBERS = 100_000


def design_width(spec: Mapping[str, Any]) -> int:
    """Columns of _design(X, spec): one per numeric feature, one per category level, at least 1."""
    return max(1, len(spec["numeric"]) + sum(len(v) for v in spec["categorical"].values()))


def _is_str_list(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def index_problem(index: Mapping[str, Any]) -> str | None:
    """What is wrong with modelset.json's own fields (those predict_candidates reads), if anything."""
    if not isinstance(index.get("task", "infer"), str):
        return "'task' must be a string"
    configs = index.get("configs", {})
    if not (isinstance(configs, dict) and all(isinstance(v, list) and all(isinstance(c, dict) for c in v)
                                              for v in configs.values())):
        return "'configs' must map each asset to a list of configurations (objects)"
    complexity = index.get("complexity", {})
    if not (isinstance(complexity, dict) and all(
            isinstance(v, dict) and all(_is_number(x) and math.isfinite(x) for x in v.values())
            for v in complexity.values())):
        return "'complexity' must map each asset to finite numbers"
    skipped = index.get("skipped", [])
    if not (isinstance(skipped, list) and all(
            isinstance(s, dict) and all(isinstance(s.get(k), str) for k in ("asset", "metric", "reason"))
            for s in skipped)):
        return "'skipped' must be a list of {asset, metric, reason}"
    return None


def entry_problem(e: Any, params: set[str], regimes: set[str], scales: Sequence[str] = ()) -> str | None:
    """What is wrong with one `models` entry of modelset.json (PerformanceModel.state() as saved),
    if anything. `params` are PerformanceModel's parameter names, `regimes` its CV regimes,
    `scales` the hardware numbers a model may be scaled by."""
    if not isinstance(e, dict):
        return "must be an object"
    for key in ("asset", "metric", "file"):
        if not isinstance(e.get(key), str):
            return f"'{key}' must be a string"
    if e["metric"] not in BY_NAME:
        return f"unknown metric {e['metric']!r} (known: {sorted(BY_NAME)})"
    st = e.get("state")
    if not isinstance(st, dict):
        return "'state' must be an object"
    params_allowed, params = params, st.get("params")
    if not isinstance(params, dict) or set(params) - params_allowed:
        return "'state.params' must hold PerformanceModel's parameters only"
    if params.get("metric", e["metric"]) != e["metric"]:
        return f"'state.params.metric' {params.get('metric')!r} is not the entry's metric {e['metric']!r}"
    if params.get("estimator", "auto") not in ("auto", "gbr", "ridge"):
        return "'state.params.estimator' must be 'auto', 'gbr' or 'ridge'"
    alpha = params.get("alpha", 0.1)
    if not (_is_number(alpha) and 0 < alpha < 1):
        return "'state.params.alpha' must be a number between 0 and 1"
    spec = st.get("spec")
    if not (isinstance(spec, dict) and _is_str_list(spec.get("numeric"))
            and isinstance(spec.get("categorical"), dict)
            and all(isinstance(k, str) and _is_str_list(v) for k, v in spec["categorical"].items())):
        return "'state.spec' must be {numeric: [names], categorical: {name: [levels]}}"
    if st.get("side") not in ("upper", "lower") or not isinstance(st.get("log"), bool):
        return "'state.side' must be 'upper' or 'lower' and 'state.log' a boolean"
    if not _is_str_list(st.get("hardware_seen")):
        return "'state.hardware_seen' must be a list of hardware names"
    gpu = st.get("gpu_classes")
    if not (isinstance(gpu, list) and all(x in (0, 1) and not isinstance(x, bool) for x in gpu)):
        return "'state.gpu_classes' must be a list of 0 (CPU) and 1 (GPU)"
    if not (isinstance(st.get("n"), int) and not isinstance(st.get("n"), bool) and st["n"] >= 0):
        return "'state.n' must be a count"
    q, guaranteed = st.get("q"), st.get("guaranteed")
    if not (isinstance(q, dict) and set(q) == regimes
            and all(v is None or (_is_number(v) and math.isfinite(v)) for v in q.values())):
        return f"'state.q' must give a finite number or null for each of {sorted(regimes)}"
    if not (isinstance(guaranteed, dict) and all(isinstance(v, bool) for v in guaranteed.values())):
        return "'state.guaranteed' must map regimes to booleans"
    if not (isinstance(st.get("cv"), dict) and all(isinstance(v, dict) for v in st["cv"].values())):
        return "'state.cv' must map regimes to objects"
    if st.get("scale") is not None and st["scale"] not in scales:
        return f"'state.scale' must be null or one of {list(scales)}"
    fill = st.get("scale_fill", 0.0)
    if not (_is_number(fill) and math.isfinite(fill)):
        return "'state.scale_fill' must be a finite number"
    if st.get("seen_kind", "gbr") not in ("gbr", "ridge"):
        return "'state.seen_kind' must be 'gbr' or 'ridge'"
    return None


def skops_schema(path: Path, index_path: Path) -> Any:
    """The object tree of a .skops file, read before skops reads anything: a zip of bounded size
    with a JSON schema."""
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            if len(infos) > MAX_MODEL_FILE_MEMBERS or sum(i.file_size for i in infos) > MAX_MODEL_FILE_BYTES:
                raise ModelError(f"{path}: refused: larger than {MAX_MODEL_FILE_BYTES // 2**20} MiB uncompressed "
                                 f"or more than {MAX_MODEL_FILE_MEMBERS} members")
            return json.loads(zf.read("schema.json"))
    except FileNotFoundError:
        raise ModelError(f"{path}: model file missing (listed in {index_path})") from None
    except ModelError:
        raise
    except Exception as exc:  # not a zip, no schema, a schema that is not JSON
        raise ModelError(f"{path}: not a skops file ({type(exc).__name__}: {exc})") from None


def foreign_classes(schema: Any) -> list[str]:
    """Classes named in a skops schema that a benchmatch model is not made of. skops trusts many
    more by default, each with its own loading code; ours need only these."""
    allowed = _allowed_classes()
    found: set[str] = set()
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if "__class__" in node:
                found.add(f"{node.get('__module__')}.{node['__class__']}")
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return sorted(found - allowed)


_ALLOWED: set[str] = set()


def _allowed_classes() -> set[str]:
    """Every class a saved PerformanceModel estimator contains (gradient boosting with its trees,
    loss and initial estimator; the scaler-ridge pipeline), plus the containers skops writes."""
    if not _ALLOWED:
        from sklearn._loss.link import IdentityLink, Interval
        from sklearn._loss.loss import HalfSquaredError
        from sklearn.dummy import DummyRegressor
        from sklearn.pipeline import Pipeline
        from sklearn.tree import DecisionTreeRegressor
        from sklearn.tree._tree import Tree

        classes = [GradientBoostingRegressor, DecisionTreeRegressor, Tree, DummyRegressor, HalfSquaredError,
                   type(HalfSquaredError().closs), IdentityLink, Interval, Pipeline, StandardScaler, Ridge,
                   np.random.RandomState]
        _ALLOWED.update(f"{c.__module__}.{c.__name__}" for c in classes)
        _ALLOWED.update(f"builtins.{n}" for n in ("dict", "list", "tuple", "str", "int", "float", "bool", "NoneType"))
        _ALLOWED.update(f"numpy.{n}" for n in ("ndarray", "float64", "float32", "int64", "int32", "bool_"))
    return _ALLOWED


def _finite_array(a: Any, shape: tuple[int, ...]) -> bool:
    return (isinstance(a, np.ndarray) and a.shape == shape and a.dtype.kind in "fiu"
            and bool(np.isfinite(a).all()))


def _tree_problem(tree: Any, width: int) -> str | None:
    """Whether a fitted regression Tree is safe for scikit-learn's unchecked traversal: every
    internal node's children lie after it (so a walk ends) and inside the node array, its feature
    is a column of the design matrix, and thresholds and leaf values are finite."""
    from sklearn.tree._tree import Tree

    if type(tree) is not Tree:
        return f"tree_ is a {type(tree).__name__}, not a Tree"
    if tree.n_features != width:
        return f"a tree reads {tree.n_features} features; the model's design has {width}"
    if tree.n_outputs != 1 or tree.max_n_classes != 1 or list(tree.n_classes) != [1]:
        return "a tree is not a single-output regression tree"
    n = tree.node_count
    if not (1 <= n == tree.capacity):
        return f"a tree has node_count {n} but {tree.capacity} nodes stored"
    left, right, feature = tree.children_left, tree.children_right, tree.feature
    if not (len(left) == len(right) == len(feature) == len(tree.threshold) == n):
        return "a tree's node arrays differ in length"
    idx = np.arange(n)
    leaf = left == -1
    inner = ~leaf
    if (right[leaf] != -1).any():
        return "a tree leaf has a right child but no left child"
    for name, child in (("left", left), ("right", right)):
        bad = inner & ((child <= idx) | (child >= n))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            return f"tree node {i} has {name} child {int(child[i])}, outside {i + 1}..{n - 1}"
    bad = inner & ((feature < 0) | (feature >= width))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        return f"tree node {i} splits on feature {int(feature[i])}; the model's design has {width} features"
    if not np.isfinite(tree.threshold[inner]).all():
        return "a tree has a threshold that is not a finite number"
    if not np.isin(tree.missing_go_to_left, (0, 1)).all():
        return "a tree has a missing-value direction other than 0 or 1"
    if not _finite_array(tree.value, (n, 1, 1)):
        return "a tree's values are not a finite (nodes, 1, 1) array"
    return None


def _gbr_problem(est: GradientBoostingRegressor, width: int) -> str | None:
    from sklearn._loss.loss import HalfSquaredError
    from sklearn.dummy import DummyRegressor
    from sklearn.tree import DecisionTreeRegressor

    if getattr(est, "n_features_in_", None) != width:
        return f"the gradient boosting model reads {getattr(est, 'n_features_in_', None)} features; " \
               f"the model's design has {width}"
    stages = getattr(est, "estimators_", None)
    if not (isinstance(stages, np.ndarray) and stages.dtype == object and stages.ndim == 2
            and stages.shape[0] >= 1 and stages.shape[1] == 1):
        return "estimators_ is not an (n_stages, 1) array of trees"
    if getattr(est, "n_trees_per_iteration_", 1) != 1:
        return "n_trees_per_iteration_ is not 1"
    lr = getattr(est, "learning_rate", None)
    if not (_is_number(lr) and math.isfinite(lr)):
        return "learning_rate is not a finite number"
    if est.loss != "squared_error" or type(getattr(est, "_loss", None)) is not HalfSquaredError:
        return "the loss is not squared error"
    init = getattr(est, "init_", None)
    if not (type(init) is DummyRegressor and getattr(init, "n_outputs_", None) == 1
            and _finite_array(getattr(init, "constant_", None), (1, 1))):
        return "init_ is not a fitted single-output DummyRegressor with a finite constant"
    for i, stage in enumerate(stages[:, 0]):
        if type(stage) is not DecisionTreeRegressor:
            return f"estimators_[{i}] is a {type(stage).__name__}, not a DecisionTreeRegressor"
        if getattr(stage, "n_features_in_", None) != width or getattr(stage, "n_outputs_", None) != 1:
            return f"estimators_[{i}] does not read the model's {width} features into one output"
        problem = _tree_problem(getattr(stage, "tree_", None), width)
        if problem:
            return f"estimators_[{i}]: {problem}"
    return None


def _ridge_problem(est: Any, width: int) -> str | None:
    steps = getattr(est, "steps", None)
    if not (isinstance(steps, list) and len(steps) == 2 and all(isinstance(s, tuple) and len(s) == 2 for s in steps)
            and type(steps[0][1]) is StandardScaler and type(steps[1][1]) is Ridge):
        return "the pipeline is not StandardScaler then Ridge"
    scaler, ridge = steps[0][1], steps[1][1]
    for name, obj in (("StandardScaler", scaler), ("Ridge", ridge)):
        if getattr(obj, "n_features_in_", None) != width:
            return f"{name} reads {getattr(obj, 'n_features_in_', None)} features; the model's design has {width}"
    for attr, on in (("mean_", scaler.with_mean), ("scale_", scaler.with_std)):
        value = getattr(scaler, attr, None)
        if on and not _finite_array(value, (width,)) or not on and value is not None:
            return f"StandardScaler.{attr} is not a finite array of {width} numbers"
    if not _finite_array(getattr(ridge, "coef_", None), (width,)):
        return f"Ridge.coef_ is not a finite array of {width} numbers"
    intercept = getattr(ridge, "intercept_", None)
    if not (isinstance(intercept, float | np.floating) and math.isfinite(intercept)):
        return "Ridge.intercept_ is not a finite number"
    return None


def estimator_problem(est: Any, width: int) -> str | None:
    """What keeps a loaded .skops payload ({"seen": est[, "new": est]}, persisted_estimators)
    from being used, if anything."""
    from sklearn.pipeline import Pipeline

    if not isinstance(est, dict) or "seen" not in est or set(est) - {"seen", "new"}:
        return "expected {'seen': estimator, 'new': estimator (optional)}"
    for regime, e in est.items():
        if type(e) is GradientBoostingRegressor:
            problem = _gbr_problem(e, width)
        elif type(e) is Pipeline:
            problem = _ridge_problem(e, width)
        else:
            problem = f"a {type(e).__name__}, not gradient boosting or a scaler-ridge pipeline"
        if problem:
            return f"{regime}: {problem}"
    return None
