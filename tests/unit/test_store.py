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


# -- parts and compaction (one file per import; a sweep folded into one file) ---------------------


def _rows(n: int, sweep: str = "s", **kw) -> list[dict]:
    return [_row(trial=f"t{i}", repeat=0, sweep_id=sweep, **kw) for i in range(n)]


def test_a_part_holds_many_trials_and_a_newer_part_wins_on_read(tmp_path):
    store = ResultsStore(tmp_path)
    first = store.write_part(_rows(5, latency_p99_ms=1.0))
    second = store.write_part([_row(trial="t2", latency_p99_ms=9.0)])  # the same key, written later
    df = store.read()
    assert len(df) == 5 and df.set_index("trial_id").loc["t2", "latency_p99_ms"] == 9.0
    assert first != second and len(store.files()) == 2
    assert store.done("s") == {(f"t{i}", 0) for i in range(5)}  # read from the parts' columns


def test_a_part_refuses_two_rows_of_one_key_and_two_sweeps(tmp_path):
    store = ResultsStore(tmp_path)
    with pytest.raises(StoreError, match="rows 0 and 1 are both"):
        store.write_part([_row(), _row()])
    with pytest.raises(StoreError, match="one part holds one sweep"):
        store.write_part([_row(), _row(trial="t2", sweep_id="other")])
    with pytest.raises(StoreError, match="latency_p99_ms"):
        store.write_part([_row(latency_p99_ms=-1.0)])
    assert store.files() == []


def test_a_trial_file_written_after_a_part_wins_and_before_it_loses(tmp_path):
    store = ResultsStore(tmp_path)
    store.write([_row(trial="a", latency_p99_ms=1.0)])
    time.sleep(0.01)
    store.write_part([_row(trial="a", latency_p99_ms=2.0), _row(trial="b", latency_p99_ms=2.0)])
    time.sleep(0.01)
    store.write([_row(trial="b", latency_p99_ms=3.0, start_time="2025-01-01T00:00:00Z")])  # older start, newer write
    got = store.read().set_index("trial_id")["latency_p99_ms"].to_dict()
    assert got == {"a": 2.0, "b": 3.0}


def test_compaction_folds_a_sweep_into_one_file_and_reads_the_same(tmp_path):
    store = ResultsStore(tmp_path)
    for i in range(30):
        store.write([_row(trial=f"t{i}", scenario=s, repeat=r) for s in ("Offline", "MultiStream") for r in (0,)])
    store.write([_row(trial="t0", repeat=1, status="failed", error="boom", latency_p99_ms=None)])
    store.write_part([_row(trial="t1", latency_p99_ms=7.0)])
    store.write([_row(trial="x", sweep_id="other")])
    before = store.read().sort_values(["sweep_id", "trial_id", "repeat", "scenario"]).reset_index(drop=True)
    done_before, ok_before = store.done("s"), store.done("s", ok_only=True)
    result = {c.sweep_id: c for c in store.compact()}
    assert result["s"].files_in == 32 and result["s"].path and result["s"].kept == []
    assert result["other"].path is None  # one file: nothing to fold
    assert len(store.files("s")) == 1 and len(store.files()) == 2
    after = store.read().sort_values(["sweep_id", "trial_id", "repeat", "scenario"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(before[sorted(before.columns)], after[sorted(after.columns)])
    assert store.done("s") == done_before and store.done("s", ok_only=True) == ok_before
    assert ("t0", 1) not in ok_before and ("t0", 1) in done_before
    assert store.repeat_ok("s", "t3", 0) is True and store.repeat_ok("s", "t0", 1) is False
    assert store.repeat_ok("s", "nope", 0) is None
    # A repeat measured again after compaction (a resumed sweep) wins over the compacted row.
    store.write([_row(trial="t0", repeat=1, latency_p99_ms=4.0)])
    assert store.repeat_ok("s", "t0", 1) is True
    row = store.read("s").query("trial_id == 't0' and repeat == 1").iloc[0]
    assert row["status"] == "ok" and row["latency_p99_ms"] == 4.0


def test_compaction_names_and_keeps_corrupt_files(tmp_path):
    store = ResultsStore(tmp_path)
    store.write([_row(trial="a")])
    store.write([_row(trial="b")])
    bad = tmp_path / "s" / "broken-r0.parquet"
    bad.write_bytes(b"PAR1 not really parquet")
    with pytest.warns(UserWarning, match="broken-r0.parquet"):
        (c,) = store.compact("s")
    assert c.kept == [str(bad)] and bad.exists() and c.files_in == 2
    with pytest.warns(UserWarning, match="broken-r0.parquet"):
        assert set(store.read()["trial_id"]) == {"a", "b"}


def test_compaction_keeps_a_file_written_again_while_it_ran(tmp_path, monkeypatch):
    from results.store import _coerce

    store = ResultsStore(tmp_path)
    store.write([_row(trial="a", latency_p99_ms=1.0)])
    store.write([_row(trial="b", latency_p99_ms=1.0)])
    put = ResultsStore._put

    def put_then_rewrite(self, table, final):  # a sweep rewrites repeat a while the part is written
        out = put(self, table, final)
        time.sleep(0.01)
        put(self, _coerce([_row(trial="a", latency_p99_ms=5.0)]), self.path_for("s", "a", 0))
        return out

    monkeypatch.setattr(ResultsStore, "_put", put_then_rewrite)
    (c,) = store.compact("s")
    monkeypatch.undo()
    assert c.kept == [store.path_for("s", "a", 0)]
    assert store.read().set_index("trial_id")["latency_p99_ms"].to_dict() == {"a": 5.0, "b": 1.0}


def test_a_reader_that_listed_files_a_compaction_then_removed_reads_the_part(tmp_path, monkeypatch):
    store = ResultsStore(tmp_path)
    for t in ("a", "b", "c"):
        store.write([_row(trial=t)])
    stale = store._listing()
    ResultsStore(tmp_path).compact()
    listing, calls = ResultsStore._listing, []

    def first_stale(self, sweep_id=None):
        calls.append(sweep_id)
        return stale if len(calls) == 1 else listing(self, sweep_id)

    monkeypatch.setattr(ResultsStore, "_listing", first_stale)
    df = store.read()
    assert set(df["trial_id"]) == {"a", "b", "c"} and len(calls) == 2


def test_compact_from_the_command_line(tmp_path, capsys):
    from results.store import _main

    store = ResultsStore(tmp_path)
    for t in ("a", "b"):
        store.write([_row(trial=t)])
    assert _main(["compact", str(tmp_path)]) == 0
    assert "s: 2 files -> " in capsys.readouterr().out and len(store.files()) == 1


@pytest.mark.parametrize("column,value,says", [
    ("latency_p99_ms", -5.0, "column 'latency_p99_ms' is -5.0 in row 2"),
    ("throughput_samples_per_s", float("inf"), "column 'throughput_samples_per_s' is inf"),
    ("accuracy", "high", "column 'accuracy' holds string values"),
    ("throughput_samples_per_s", 1e100, r"column 'throughput_samples_per_s' is 1e\+100 in row 2"),
    ("trial_id", "", "column 'trial_id' is empty in row 2"),
])
def test_a_valid_parquet_file_with_poisoned_values_is_named_and_skipped(tmp_path, column, value, says):
    """Written around the store's own checks (another tool, a hand edit): read refuses it by name."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    store = ResultsStore(tmp_path / "results")
    good = {"sweep_id": "s", "trial_id": "a", "repeat": 0, "scenario": "Offline", "asset": "m", "hardware": "h",
            "status": "ok", "latency_p99_ms": 1.0, "throughput_samples_per_s": 100.0}
    store.write([good])
    rows = [{**good, "trial_id": "b", column: good.get(column, "b" if column == "trial_id" else None)},
            {**good, "trial_id": "b", "scenario": "SingleStream", column: value}]
    folder = tmp_path / "results" / "s"
    pq.write_table(pa.Table.from_pylist(rows), folder / "b-r0.parquet")
    with pytest.warns(UserWarning, match=rf"b-r0\.parquet holds values no measurement has: {says}"):
        df = store.read()
    assert list(df["trial_id"]) == ["a"]  # the rest of the store still reads
    with pytest.raises(StoreError, match="b-r0.parquet"):
        store.read(on_corrupt="raise")
