import math
import multiprocessing as mp
import os
import signal
import time
from pathlib import Path

import pandas as pd
import pytest

from results.store import ResultsStore, StoreError


def _row(trial="t1", repeat=0, scenario="Offline", **kw):
    row = {"sweep_id": "s", "trial_id": trial, "repeat": repeat, "scenario": scenario, "asset": "a",
           "task": "infer", "hardware": "local-1c", "status": "ok", "latency_p99_ms": 1.5,
           "throughput_samples_per_s": 100.0, "cfg_batch_size": 8, "start_time": "2026-01-01T00:00:00Z"}
    row.update(kw)
    return row


def test_round_trip_keeps_values_types_and_missing(tmp_path):
    store = ResultsStore(tmp_path / "r")
    store.write([_row(scenario="SingleStream", energy_j=None), _row(scenario="Offline")])
    store.write([_row(trial="t2", cfg_batch_size=16, cfg_dtype="bfloat16")])
    df = store.read()
    assert len(df) == 3
    assert set(df["trial_id"]) == {"t1", "t2"}
    assert df["latency_p99_ms"].dtype == "float64"
    assert math.isnan(df.loc[df.scenario == "SingleStream", "energy_j"].iloc[0])
    assert df.loc[df.trial_id == "t2", "cfg_dtype"].iloc[0] == "bfloat16"
    assert store.done("s") == {("t1", 0), ("t2", 0)}


def test_duplicates_on_read_keep_newest(tmp_path):
    store = ResultsStore(tmp_path)
    store.write([_row(latency_p99_ms=1.0, start_time="2026-01-01T00:00:00Z")])
    store.write([_row(latency_p99_ms=2.0, start_time="2026-01-02T00:00:00Z")])  # retried trial, same key
    df = store.read()
    assert len(df) == 1 and df["latency_p99_ms"].iloc[0] == 2.0


@pytest.mark.parametrize("bad, field", [({"latency_p99_ms": -1.0}, "latency_p99_ms"),
                                        ({"throughput_samples_per_s": float("inf")}, "throughput_samples_per_s"),
                                        ({"latency_p50_ms": "fast"}, "latency_p50_ms"),
                                        ({"asset": ""}, "asset")])
def test_bad_rows_are_rejected_naming_the_column_and_nothing_is_written(tmp_path, bad, field):
    store = ResultsStore(tmp_path)
    with pytest.raises(StoreError, match=field):
        store.write([_row(**bad)])
    assert store.files() == []


def test_one_file_holds_one_trial_repeat(tmp_path):
    with pytest.raises(StoreError, match="one"):
        ResultsStore(tmp_path).write([_row(trial="a"), _row(trial="b")])


def test_corrupt_file_is_named_and_the_rest_still_read(tmp_path):
    store = ResultsStore(tmp_path)
    store.write([_row(trial="good")])
    bad = tmp_path / "s" / "broken-r0.parquet"
    bad.write_bytes(b"PAR1 not really parquet")
    with pytest.warns(UserWarning, match="broken-r0.parquet"):
        df = store.read()
    assert list(df["trial_id"]) == ["good"]
    with pytest.raises(StoreError, match="broken-r0.parquet"):
        store.read(on_corrupt="raise")


def _writer_forever(root: str) -> None:
    store = ResultsStore(root)
    big = [_row(trial="big", scenario=f"s{i}", error="x" * 2000) for i in range(3000)]
    while True:
        store.write(big)


def test_killed_writer_never_leaves_a_partial_visible_file(tmp_path):
    ctx = mp.get_context("fork")
    for _ in range(3):
        proc = ctx.Process(target=_writer_forever, args=(str(tmp_path),))
        proc.start()
        time.sleep(0.8)
        os.kill(proc.pid, signal.SIGKILL)
        proc.join()
        store = ResultsStore(tmp_path)
        for path in store.files():
            pd.read_parquet(path)  # every visible file is complete
        df = store.read(on_corrupt="raise")
        assert set(df["trial_id"]) <= {"big"}


@pytest.mark.parametrize("sweep", ["..", ".", ".hidden", "../..", ""])
def test_a_name_never_writes_outside_the_store_or_hides_its_file(tmp_path, sweep):
    store = ResultsStore(tmp_path / "results")
    row = {"sweep_id": sweep, "trial_id": "t", "repeat": 0, "scenario": "Offline", "asset": "a", "hardware": "h"}
    with pytest.raises(StoreError):
        store.write([row])
    assert not any(p for p in tmp_path.rglob("*.parquet"))


@pytest.mark.parametrize("name", ["..", ".", ".x"])
def test_a_sweep_file_named_like_a_parent_folder_is_refused(name):
    from benchmarks.spec import SweepSpec

    with pytest.raises(ValueError, match="name"):
        SweepSpec(name=name, asset="digits-mlp", hardware=["local-1c"])


def test_separators_in_an_id_stay_inside_the_store(tmp_path):
    store = ResultsStore(tmp_path / "results")
    path = store.write([{"sweep_id": "a/../..", "trial_id": "t/../../x", "repeat": 0, "scenario": "Offline",
                         "asset": "a", "hardware": "h"}])
    assert Path(path).resolve().is_relative_to((tmp_path / "results").resolve())


def test_old_temp_files_of_killed_writers_are_removed_and_young_ones_kept(tmp_path):
    store = ResultsStore(tmp_path / "results")
    folder = tmp_path / "results" / "s"
    folder.mkdir(parents=True)
    old, young, data = folder / ".t-r0.parquet.abc.tmp", folder / ".t-r1.parquet.def.tmp", folder / "keep.parquet"
    for f in (old, young, data):
        f.write_bytes(b"x")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    os.utime(data, (time.time() - 3600, time.time() - 3600))
    assert store.remove_orphans() == [str(old)]
    assert not old.exists() and young.exists() and data.exists()
