"""More cores slower than fewer beyond the spread (#10 item 2): the pair is named and left out of
measured answers, where a single row's flags cannot see it."""

from __future__ import annotations

import pandas as pd

from cluster.hardware import HardwareSpec
from matcher.workspace import Sources, Workspace
from results.consistency import inconsistent_rows, more_cores_slower

CATALOG = {"local-1c": HardwareSpec("local-1c", "cpu", cpu_cores=1, price_per_hour_usd=0.04, price_source="t",
                                    local=True),
           "local-2c": HardwareSpec("local-2c", "cpu", cpu_cores=2, price_per_hour_usd=0.09, price_source="t",
                                    local=True)}


def _rows(speed_2c: float) -> pd.DataFrame:
    out = []
    for hw, speed in (("local-1c", 1000.0), ("local-2c", speed_2c)):
        for batch in (1, 8):
            for r, jitter in enumerate((1.0, 1.05, 0.95)):
                base = {"sweep_id": "s", "trial_id": f"{hw}-{batch}", "repeat": r, "asset": "mlp", "task": "infer",
                        "status": "ok", "hardware": hw, "hostname": "box", "cfg_batch_size": batch,
                        "cfg_threads": 1, "num_threads": 1, "accuracy": 0.9}
                slow = speed if batch == 8 else 1000.0  # only batch 8 is off on local-2c
                out += [{**base, "scenario": "MultiStream", "latency_p99_ms": 1.0},
                        {**base, "scenario": "Offline", "throughput_samples_per_s": slow * jitter * batch}]
    return pd.DataFrame(out)


def test_more_cores_slower_beyond_the_spread_is_found_and_left_out():
    cores = {"local-1c": 1, "local-2c": 2}
    assert more_cores_slower(_rows(900.0), cores) == []  # within the spread and margin: not a finding
    rows = _rows(200.0)
    (odd,) = more_cores_slower(rows, cores)
    assert (odd.hardware, odd.than, odd.config) == ("local-2c", "local-1c", "batch_size=8, threads=1")
    assert int(inconsistent_rows(rows, [odd]).sum()) == 6  # its 3 repeats x 2 scenarios
    ws = Workspace(Sources(results_uri="memory"), catalog=CATALOG, rows=rows)
    ans = ws.recommend({"asset": "mlp", "constraints": {"throughput_qps": 100}, "top_k": 10})
    used = {(hw, o["config"]["batch_size"]) for o in ans["options"] for hw in o["hardware"]}
    assert ("local-2c", 8) not in used and ("local-2c", 1) in used
    assert any("more cores slower" in n and "local-2c [batch_size=8, threads=1]" in n for n in ans["notes"])


def test_other_thread_counts_need_an_order_of_magnitude():
    cores = {"local-1c": 1, "local-2c": 2}
    rows = _rows(400.0).drop(columns=["cfg_threads"])
    rows["num_threads"] = rows["hardware"].map({"local-1c": 1, "local-2c": 2})
    assert more_cores_slower(rows, cores) == []  # 2.5x with twice the threads: plausible threading cost
    assert more_cores_slower(_rows(400.0), cores)  # the same 2.5x at the same threads is not
    rows = _rows(15.0).drop(columns=["cfg_threads"])
    rows["num_threads"] = rows["hardware"].map({"local-1c": 1, "local-2c": 2})
    assert [i.hardware for i in more_cores_slower(rows, cores)] == ["local-2c"]  # 67x: the case
    assert more_cores_slower(rows.drop(columns=["hostname"]), cores) == []  # not known to share a host
