"""A models folder is data (issue #11, item 1). A .skops file made only of trusted types, whose tree
arrays would send scikit-learn's unchecked native code out of bounds (or round in a loop), is refused
by ModelSet.load with the file's name, and neither the CLI nor the service dies of it.

Every load of a poisoned file runs in a subprocess: a segfault or an endless loop is then a test
failure that says so, not a dead pytest. The poisoned files are real: a model fitted by
`train_models` on the service's synthetic store, saved with skops, then edited."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import skops.io as sio

from cluster.hardware import load_catalog
from matcher.models import TRUSTED_TYPES, train_models
from results.store import ResultsStore
from tests.fixtures.service_data import write_synthetic_store

ROOT = Path(__file__).resolve().parents[2]
MLP = "synthetic-mlp"
VICTIM = f"{MLP}__latency_p99_ms.skops"
# A process that gets this far without an answer is stuck in a tree walk that never ends.
SUBPROCESS_TIMEOUT_S = 120

# Loads each model set named on the command line and predicts with every model (that is where the
# native code runs); one JSON line per model set, flushed, so that the parent knows which one a
# crash interrupted.
LOAD_AND_PREDICT = textwrap.dedent("""
    import json, sys
    from cluster.hardware import load_catalog
    from matcher.models import ModelSet, predict_candidates
    for folder in sys.argv[1:]:
        try:
            ms = ModelSet.load(folder)
            for asset in ms.assets():
                predict_candidates(ms, load_catalog(None), asset=asset)
        except Exception as exc:
            out = {"kind": type(exc).__name__, "message": str(exc)}
        else:
            out = {"kind": "ok", "models": len(ms.models)}
        print(json.dumps(out), flush=True)
""")

# The service over the same store, in-process through TestClient (its constructor loads the data
# and builds the candidate tables, predictions included).
SERVE = textwrap.dedent("""
    import json, sys
    from fastapi.testclient import TestClient
    from serve.app import create_app
    from serve.core import ServiceCore, ServiceSettings
    app = create_app()
    app.state.core = ServiceCore(ServiceSettings(results_uri=sys.argv[1], models_dir=sys.argv[2]))
    client = TestClient(app, raise_server_exceptions=False)
    out = {}
    for method, path in (("GET", "/healthz"), ("GET", "/assets"), ("GET", "/hardware"), ("POST", "/recommend")):
        r = client.request(method, path, json={"asset": "synthetic-mlp"} if method == "POST" else None)
        out[path] = {"status": r.status_code, "body": r.json()}
    print(json.dumps(out))
""")


def python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=SUBPROCESS_TIMEOUT_S, env={**os.environ, "PYTHONPATH": str(ROOT)})


def run_python(code: str, *args: str) -> dict[str, Any]:
    """Run `code` in a fresh interpreter at the repository root; its last stdout line, parsed."""
    try:
        proc = python(code, *args)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the process hung for {SUBPROCESS_TIMEOUT_S} s (a tree walk that never ends?)")
    if proc.returncode < 0:
        pytest.fail(f"the process died of {signal.Signals(-proc.returncode).name}: {proc.stderr[-2000:]}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def load_each(folders: list[Path]) -> dict[Path, dict[str, Any]]:
    """LOAD_AND_PREDICT's outcome for every folder, in as few interpreters as the folders allow:
    when one kills or hangs its process, that is its outcome and the rest go to a new one."""
    outcomes: dict[Path, dict[str, Any]] = {}
    todo = list(folders)
    while todo:
        try:
            proc = python(LOAD_AND_PREDICT, *map(str, todo))
            stdout, died = proc.stdout, (f"died of {signal.Signals(-proc.returncode).name}"
                                         if proc.returncode < 0 else None)
            assert proc.returncode <= 0, proc.stderr[-3000:]
        except subprocess.TimeoutExpired as exc:
            stdout = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
            died = f"hung for {SUBPROCESS_TIMEOUT_S} s (a tree walk that never ends?)"
        lines = stdout.strip().splitlines()
        for folder, line in zip(todo, lines, strict=False):
            outcomes[folder] = json.loads(line)
        if died is None:
            break
        outcomes[todo[len(lines)]] = {"kind": "crash", "message": died}
        todo = todo[len(lines) + 1:]
    return outcomes


# ----------------------------------------------------------------------------------------------
# A real trained model set, and ways to poison one of its files
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """results/ (the service's synthetic store) with results/models/ trained on it: a gradient
    boosting model per metric for measured hardware, a scaler-ridge pipeline for new hardware."""
    results = tmp_path_factory.mktemp("store") / "results"
    write_synthetic_store(results, assets=(MLP,), batch_sizes=(1, 2, 4, 8), repeats=2)
    rows = ResultsStore(results).read()
    # select=False: gradient boosting on measured hardware whatever the data, so that the poisons
    # below have trees to edit (selection may pick ridge on this data).
    models = train_models(rows, load_catalog(None), assets=[MLP], metrics=("latency_p99_ms", "throughput_qps"),
                          select=False)
    assert set(models.models) == {(MLP, "latency_p99_ms"), (MLP, "throughput_qps")}
    models.save(results / "models")
    return results


def copy_store(trained: Path, tmp_path: Path) -> Path:
    results = tmp_path / "results"
    shutil.copytree(trained, results)
    return results


def edit_estimator(path: Path, edit: Callable[[Any], None]) -> None:
    """Load the fitted estimator, change it in memory, save it with skops again: still only
    trusted types, as a file an attacker could hand over."""
    est = sio.load(path, trusted=TRUSTED_TYPES)
    edit(est["seen"])
    sio.dump(est, path)


def edit_schema(path: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    """Edit the skops schema (the object tree skops rebuilds) inside the zip."""
    with zipfile.ZipFile(path) as zf:
        members = {i.filename: zf.read(i) for i in zf.infolist()}
    schema = json.loads(members["schema.json"])
    edit(schema)
    members["schema.json"] = json.dumps(schema).encode()
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def first_tree_node(node: Any) -> dict[str, Any]:
    """The schema entry of the first sklearn Tree."""
    stack = [node]
    while stack:
        n = stack.pop(0)
        if isinstance(n, dict):
            if n.get("__loader__") == "TreeNode":
                return n
            stack.extend(n.values())
        elif isinstance(n, list):
            stack.extend(n)
    raise AssertionError("no Tree in the schema")


def first_tree(gbr: Any) -> Any:
    return gbr.estimators_[0, 0].tree_


def first_leaf(tree: Any) -> int:
    return int(np.flatnonzero(tree.children_left == -1)[0])


def two_outputs_per_stage(gbr: Any) -> None:
    gbr.estimators_ = np.ascontiguousarray(np.concatenate([gbr.estimators_, gbr.estimators_], axis=1))


def tree_with_two_outputs(schema: dict[str, Any]) -> None:
    n_outputs = first_tree_node(schema)["__reduce__"]["args"]["content"][2]
    n_outputs["content"] = "2"
    n_outputs["__id__"] = 1  # skops shares equal values by id: give this one its own


def on_first_tree(edit: Callable[[Any], None]) -> Callable[[Path], None]:
    return lambda models: edit_estimator(models / VICTIM, lambda gbr: edit(first_tree(gbr)))


def edit_index(edit: Callable[[dict[str, Any]], None]) -> Callable[[Path], None]:
    def apply(models: Path) -> None:
        index = json.loads((models / "modelset.json").read_text())
        edit(index)
        (models / "modelset.json").write_text(json.dumps(index))
    return apply


def drop_a_feature(index: dict[str, Any]) -> None:
    next(e for e in index["models"] if e["file"] == VICTIM)["state"]["spec"]["numeric"].pop()


def set_q(index: dict[str, Any]) -> None:
    index["models"][0]["state"]["q"] = {"heldout_config": "x"}


# poison -> (edit of the models folder, the file the refusal must name, what it must say)
POISONS: dict[str, tuple[Callable[[Path], None], str, str]] = {
    # what the issue found: a child index far outside the node array (segfault)
    "left child out of range": (on_first_tree(lambda t: t.children_left.__setitem__(0, 10**7)), VICTIM,
                                r"tree node 0 has left child 10000000, outside 1\.\."),
    "right child negative": (on_first_tree(lambda t: t.children_right.__setitem__(0, -10**6)), VICTIM,
                             r"tree node 0 has right child -1000000"),
    # a node that is its own child: the walk never ends
    "child loop": (on_first_tree(lambda t: t.children_left.__setitem__(0, 0)), VICTIM,
                   r"tree node 0 has left child 0, outside"),
    "feature out of range": (on_first_tree(lambda t: t.feature.__setitem__(0, 10**7)), VICTIM,
                             r"tree node 0 splits on feature 10000000; the model's design has \d+ features"),
    "threshold NaN": (on_first_tree(lambda t: t.threshold.__setitem__(0, math.nan)), VICTIM,
                      r"threshold that is not a finite number"),
    "leaf value infinite": (on_first_tree(lambda t: t.value.__setitem__(first_leaf(t), math.inf)), VICTIM,
                            r"values are not a finite"),
    # predict_stages adds each stage's columns into an (n, 1) array without checking its width
    "two trees per stage": (lambda m: edit_estimator(m / VICTIM, two_outputs_per_stage), VICTIM,
                            r"estimators_ is not an \(n_stages, 1\)"),
    "tree outputs vs classes": (lambda m: edit_schema(m / VICTIM, tree_with_two_outputs), VICTIM,
                                r"could not be loaded \(IndexError"),
    # modelset.json's feature spec and the trees beside it must describe the same design matrix
    "feature count vs design": (edit_index(drop_a_feature), VICTIM,
                                r"reads (\d+) features; the model's design has (?!\1)\d+"),
    "malformed index entry": (edit_index(set_q), "modelset.json", r"models\[0\]: 'state.q'"),
}


@pytest.fixture(scope="module")
def loaded(trained: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Each poison applied to its own copy of the trained models, and the untouched models
    ("none"), all loaded and used; poison -> outcome."""
    folders = {"none": trained / "models"}
    for name, (edit, _file, _why) in POISONS.items():
        models = copy_store(trained, tmp_path_factory.mktemp("poisoned")) / "models"
        edit(models)
        folders[name] = models
    outcomes = load_each(list(folders.values()))
    return {name: outcomes[folder] for name, folder in folders.items()}


@pytest.mark.parametrize("poison", list(POISONS))
def test_a_poisoned_model_file_is_refused_with_its_name(loaded: dict[str, dict[str, Any]], poison: str) -> None:
    _edit, file, why = POISONS[poison]
    out = loaded[poison]
    assert out["kind"] == "ModelError", out
    assert file in out["message"], out
    assert re.search(why, out["message"]), out


def test_a_trained_model_set_passes_the_checks(loaded: dict[str, dict[str, Any]]) -> None:
    assert loaded["none"] == {"kind": "ok", "models": 2}


def test_the_service_stays_up_and_names_the_file(trained: Path, tmp_path: Path) -> None:
    """The poisoned file of the issue, under the service: no crash at start (its constructor
    predicts while building candidate tables); /healthz says not ready and names the file, the
    answering routes give 503 naming it, /assets and /hardware keep answering."""
    results = copy_store(trained, tmp_path)
    POISONS["left child out of range"][0](results / "models")
    out = run_python(SERVE, str(results), str(results / "models"))
    shown = f"results/models/{VICTIM}"
    health = out["/healthz"]
    assert health["status"] == 503 and health["body"]["status"] == "not ready", health
    assert any(shown in p for p in health["body"]["problems"]), health
    assert out["/recommend"]["status"] == 503 and shown in out["/recommend"]["body"]["detail"], out["/recommend"]
    assert out["/assets"]["status"] == 200 and out["/hardware"]["status"] == 200
    assert str(tmp_path) not in json.dumps(out)


def test_benchmatch_recommend_exits_with_the_files_name(trained: Path, tmp_path: Path) -> None:
    """The issue's reproduction: `benchmatch recommend` exited 139 on this file."""
    results = copy_store(trained, tmp_path)
    POISONS["left child out of range"][0](results / "models")
    req = tmp_path / "req.json"
    req.write_text(json.dumps({"asset": MLP}))
    proc = subprocess.run([sys.executable, "-m", "benchmatch", "recommend", str(req), "--results", str(results),
                           "--json"], cwd=ROOT, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT_S,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode > 0, (proc.returncode, proc.stderr[-2000:])
    assert VICTIM in proc.stdout + proc.stderr and "left child 10000000" in proc.stdout + proc.stderr
