import numpy as np
import pandas as pd

from matcher.baselines.bruteforce import brute_force
from matcher.pareto import pareto_front
from matcher.requirements import parse_requirements


def _cands(seed: int, n: int = 6) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "hardware": [f"hw{i % 3}" for i in range(n)],
        "cfg_batch_size": [1 + i for i in range(n)],
        "price_per_hour_usd": rng.uniform(0.1, 3.0, n).round(3),
        "latency_p99_ms": rng.uniform(1, 50, n).round(2),
        "throughput_qps": rng.uniform(50, 500, n).round(1),
        "accuracy": 0.95,
        "inventory": 3,
    })


def test_front_is_non_dominated_and_each_point_is_the_least_cost_at_its_latency():
    checked = 0
    for seed in range(12):
        cands = _cands(seed)
        req = parse_requirements({"constraints": {"throughput_qps": 600}})
        front = pareto_front(req, cands)
        lat = [p.latency_p99_ms for p in front]
        cost = [p.cost_per_hour_usd for p in front]
        assert lat == sorted(lat, reverse=True), "points go from slow to fast"
        assert all(b > a for a, b in zip(cost, cost[1:], strict=False)), "faster must cost strictly more"
        for p in front:
            r = parse_requirements({"constraints": {"throughput_qps": 600, "latency_p99_ms": p.latency_p99_ms}})
            best = brute_force(r, cands).best
            assert best is not None
            assert abs(best.cost_per_hour_usd - p.cost_per_hour_usd) < 1e-6
            checked += 1
    assert checked > 12


def test_front_respects_the_users_slo_and_other_constraints():
    cands = _cands(3)
    req = parse_requirements({"constraints": {"throughput_qps": 300, "latency_p99_ms": 30}})
    front = pareto_front(req, cands)
    assert front and all(p.latency_p99_ms <= 30 for p in front)


def test_nothing_feasible_gives_an_empty_front():
    req = parse_requirements({"constraints": {"latency_p99_ms": 0.001}})
    assert pareto_front(req, _cands(1)) == []


def test_the_front_says_when_the_requests_objective_is_not_the_fronts():
    from matcher.pareto import pareto_answer

    cands = _cands(3)
    for objective, said in (("cost", False), ("energy", True), ("latency", True)):
        req = parse_requirements({"objective": objective, "constraints": {"throughput_qps": 50}})
        ans = pareto_answer(req, cands)
        assert ans["objective"] == "cost"
        assert bool(ans["notes"]) is said and all(objective in n for n in ans["notes"])
