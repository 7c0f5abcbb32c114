"""The LoadGen harness on its own: QSL/SUT split, scenarios, log parsing, error handling."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from benchmarks import loadgen_harness as lgh
from benchmarks.spec import LoadGenSettings

SETTINGS = LoadGenSettings(min_duration_ms=50, min_query_count=16, offline_samples=64)


def busy(ms: float):
    def predict(batch: torch.Tensor) -> np.ndarray:
        end = time.perf_counter_ns() + int(ms * 1e6)
        while time.perf_counter_ns() < end:
            pass
        return np.zeros(len(batch), dtype=np.int64)
    return predict


@pytest.fixture()
def qsl():
    return lgh.QuerySampleLibrary(torch.arange(40, dtype=torch.float32).reshape(20, 2), labels=np.arange(20) % 3)


def test_gather_returns_requested_samples(qsl):
    assert torch.equal(qsl.gather([3]), torch.tensor([[6.0, 7.0]]))
    assert torch.equal(qsl.gather([1, 0]), torch.tensor([[2.0, 3.0], [0.0, 1.0]]))


def test_singlestream_latency_reflects_service_time(qsl, tmp_path):
    calib = lgh.Calibration(0.002, 0.002, 1)
    run = lgh.run_scenario("SingleStream", lgh.SystemUnderTest(busy(2), qsl, 1), qsl, SETTINGS, calib, tmp_path)
    assert run.scenario == "SingleStream" and run.validity in ("VALID", "INVALID")
    # bounds leave room for a busy shared machine; tests/perf/harness_fidelity.py has the tight figures
    assert 2.0 <= run.latency_ms("p50") < 3.0
    assert run.samples == run.query_count and run.samples_per_query == 1
    assert 150 < run.throughput_samples_per_s <= 500


def test_multistream_query_is_one_batch(qsl, tmp_path):
    sizes = []

    def predict(batch):
        sizes.append(len(batch))
        return np.zeros(len(batch), dtype=np.int64)

    calib = lgh.Calibration(1e-4, 1e-4, 4)
    run = lgh.run_scenario("MultiStream", lgh.SystemUnderTest(predict, qsl, 4), qsl, SETTINGS, calib, tmp_path)
    assert set(sizes) == {4} and run.samples_per_query == 4 and run.samples == 4 * run.query_count
    assert run.throughput_samples_per_s > 0


def test_offline_batches_and_sample_floor(qsl, tmp_path):
    sizes = []

    def predict(batch):
        sizes.append(len(batch))
        return np.zeros(len(batch), dtype=np.int64)

    calib = lgh.Calibration(1e-3, 1e-3, 8)  # warm-up 8000 samples/s, expected 2 x -> 1.1 x 0.05 s x 16000 = 880
    run = lgh.run_scenario("Offline", lgh.SystemUnderTest(predict, qsl, 8), qsl, SETTINGS, calib, tmp_path)
    assert run.samples == 880 and sum(sizes) == 880 and max(sizes) == 8
    assert run.latency_ns["p50"] is None and run.target_qps == pytest.approx(16000)


def test_server_uses_target_and_bound(qsl, tmp_path):
    settings = SETTINGS.model_copy(update={"server_target_qps": 400.0, "server_latency_bound_ms": 20.0})
    sut = lgh.ServerSUT(busy(0.2), qsl, 4)
    run = lgh.run_scenario("Server", sut, qsl, settings, lgh.Calibration(2e-4, 5e-4, 4), tmp_path)
    assert run.target_qps == 400 and run.details["effective_target_latency_ns"] in (20_000_000, "20000000")
    assert 100 < run.throughput_samples_per_s < 1200 and run.latency_ms("p99") > 0.2


def test_accuracy_mode_through_same_sut(qsl, tmp_path):
    def predict(batch):  # correct for every sample whose first feature / 2 is even... i.e. label = idx % 3
        idx = (batch[:, 0] / 2).long()
        return (idx % 3).numpy()

    acc = lgh.run_accuracy(lgh.SystemUnderTest(predict, qsl, 5), qsl, SETTINGS, lgh.Calibration(1e-4, 1e-4, 5), tmp_path)
    assert acc == 1.0
    qsl.labels = np.zeros(20, dtype=np.int64)
    acc = lgh.run_accuracy(lgh.SystemUnderTest(predict, qsl, 5), qsl, SETTINGS, lgh.Calibration(1e-4, 1e-4, 5), tmp_path)
    assert acc == pytest.approx(7 / 20)  # idx % 3 == 0 for 0,3,...,18


def test_model_error_is_raised_after_the_run_not_hung(qsl, tmp_path):
    def predict(batch):
        raise ValueError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        lgh.run_scenario("SingleStream", lgh.SystemUnderTest(predict, qsl, 1), qsl, SETTINGS,
                         lgh.Calibration(1e-4, 1e-4, 1), tmp_path)


def test_warm_up_calibrates(qsl):
    calib = lgh.warm_up(busy(1), qsl, 4, min_iters=5, min_time_s=0.01)
    assert 0.001 <= calib.single_latency_s < 0.004 and calib.batch_throughput > 0


SUMMARY = """================================================
MLPerf Results Summary
================================================
SUT name : PySUT
Scenario : SingleStream
Mode     : PerformanceOnly
90.0th percentile latency (ns) : 1019322
Result is : VALID
================================================
Additional Stats
================================================
QPS w/ loadgen overhead         : 977.44
Mean latency (ns)               : 1015864
50.00 percentile latency (ns)   : 1016567
90.00 percentile latency (ns)   : 1019322
95.00 percentile latency (ns)   : 1020865
99.00 percentile latency (ns)   : 1043026
99.90 percentile latency (ns)   : 1104632
samples_per_query : 1
"""


def test_summary_alone_is_enough(tmp_path):
    (tmp_path / "mlperf_log_summary.txt").write_text(SUMMARY)
    run = lgh.parse_logs(tmp_path)
    assert run.validity == "VALID" and run.scenario == "SingleStream"
    assert run.latency_ms("p50") == pytest.approx(1.016567) and run.latency_ms("p999") == pytest.approx(1.104632)
    assert run.throughput_samples_per_s == pytest.approx(977.44)


def test_no_logs_is_an_error(tmp_path):
    with pytest.raises(RuntimeError, match="no logs"):
        lgh.parse_logs(tmp_path)


def test_multistream_rate_definition_matches_loadgen_singlestream(qsl, tmp_path):
    # The MultiStream rate is computed like LoadGen's SingleStream "QPS w/ loadgen overhead";
    # applied to a SingleStream detail log it must reproduce LoadGen's own figure.
    # (LoadGen divides N-1 queries by the time of the last issue; we divide N by the time to the end,
    # so the two agree to about one query's share.)
    calib = lgh.Calibration(5e-4, 5e-4, 1)
    settings = SETTINGS.model_copy(update={"min_duration_ms": 150, "min_query_count": 100})
    lgh.run_scenario("SingleStream", lgh.SystemUnderTest(busy(0.5), qsl, 1), qsl, settings, calib, tmp_path)
    d = lgh.read_detail_log(tmp_path / "mlperf_log_detail.txt")
    ours = d["result_query_count"][0] / (lgh._issue_window_ms(d) / 1e3)
    assert ours == pytest.approx(float(d["result_qps_with_loadgen_overhead"][0]), rel=0.03)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_gather_keeps_dtype_and_values(dtype):
    x = torch.randn(10, 3).to(dtype)
    q = lgh.QuerySampleLibrary(x)
    got = q.gather([7, 2, 2])
    assert got.dtype == dtype and torch.equal(got, x[[7, 2, 2]])


def test_wrong_prediction_count_is_named_at_warm_up(qsl):
    def predict(batch):
        return np.zeros(len(batch) + 1, dtype=np.int64)

    with pytest.raises(RuntimeError, match="returned 2 predictions for 1 samples"):
        lgh.warm_up(predict, qsl, 4, min_iters=1, min_time_s=0.0)


def test_wrong_prediction_count_in_a_batch_fails_the_run(qsl, tmp_path):
    def predict(batch):
        return np.zeros(1, dtype=np.int64)

    with pytest.raises(RuntimeError, match="returned 1 predictions for 8 samples"):
        lgh.run_scenario("Offline", lgh.SystemUnderTest(predict, qsl, 8), qsl, SETTINGS,
                         lgh.Calibration(1e-3, 1e-3, 8), tmp_path)


def test_cpu_predictor_hands_over_the_model_output_and_accuracy_converts_it(qsl, tmp_path):
    # On the CPU the predictor adds no wrapper; LoadGen's accuracy log still gets int64 predictions.
    def run(batch):
        return (batch[:, 0] / 2).long() % 3

    predict = lgh.torch_predictor(run, torch.device("cpu"))
    assert predict is run
    acc = lgh.run_accuracy(lgh.SystemUnderTest(predict, qsl, 5), qsl, SETTINGS, lgh.Calibration(1e-4, 1e-4, 5),
                           tmp_path)
    assert acc == 1.0


def test_predictions_as_int64_flattens_tensors_and_arrays():
    assert lgh.predictions_as_int64(torch.tensor([[1], [2]], dtype=torch.int32)).tolist() == [1, 2]
    out = lgh.predictions_as_int64(np.array([True, False]))
    assert out.dtype == np.int64 and out.flags.c_contiguous and out.tolist() == [1, 0]


def test_predictor_with_sync_calls_it_per_batch():
    calls = []
    predict = lgh.torch_predictor(lambda x: x[:, 0].long(), torch.device("cpu"), sync=lambda: calls.append(1))
    with torch.inference_mode():
        assert predict(torch.ones(3, 2)).tolist() == [1, 1, 1]
    assert calls == [1]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_batcher_fills_one_buffer_for_full_batches(dtype):
    x = torch.randn(10, 3).to(dtype)
    gather = lgh.QuerySampleLibrary(x).batcher(3)
    first = gather(np.array([7, 2, 2]))
    assert first.dtype == dtype and torch.equal(first, x[[7, 2, 2]])
    second = gather(np.array([0, 1, 9]))
    assert second.data_ptr() == first.data_ptr() and torch.equal(second, x[[0, 1, 9]])
    tail = gather(np.array([4]))  # a short batch is gathered fresh, leaving the buffer alone
    assert torch.equal(tail, x[[4]]) and torch.equal(second, x[[0, 1, 9]])


def _recording_sut(predict, qsl, batch):
    sut = lgh.SystemUnderTest(predict, qsl, batch)
    sizes, real = [], sut._complete

    def complete(responses):
        sizes.append(len(responses))
        real(responses)

    sut._complete = complete
    return sut, sizes


def test_offline_groups_completions_and_multistream_does_not(qsl, tmp_path):
    def predict(batch):
        return np.zeros(len(batch), dtype=np.int64)

    sut, sizes = _recording_sut(predict, qsl, 8)
    calib = lgh.Calibration(1e-3, 1e-3, 8)  # 880 samples in one Offline query: one group
    run = lgh.run_scenario("Offline", sut, qsl, SETTINGS, calib, tmp_path / "off")
    assert sizes == [880] and run.samples == 880 and sut.completed == 880
    sut, sizes = _recording_sut(predict, qsl, 4)
    run = lgh.run_scenario("MultiStream", sut, qsl, SETTINGS, lgh.Calibration(1e-4, 1e-4, 4), tmp_path / "ms")
    assert set(sizes) == {4} and len(sizes) == run.query_count


@pytest.mark.parametrize("accuracy", [False, True])
def test_failure_mid_query_completes_every_sample_and_is_raised(qsl, tmp_path, accuracy):
    calls = []

    def predict(batch):
        calls.append(len(batch))
        if len(calls) == 2:
            raise ValueError("second batch broke")
        return np.zeros(len(batch), dtype=np.int64)

    sut = lgh.SystemUnderTest(predict, qsl, 8)
    with pytest.raises(RuntimeError, match="second batch broke"):  # and LoadGen did not wait forever
        if accuracy:
            lgh.run_accuracy(sut, qsl, SETTINGS, lgh.Calibration(1e-3, 1e-3, 8), tmp_path)
        else:
            lgh.run_scenario("Offline", sut, qsl, SETTINGS, lgh.Calibration(1e-3, 1e-3, 8), tmp_path)
    assert len(calls) == 2 and sut.completed == 8
