"""serve/direct_ingress.py without Ray: which variables it sets, that the user's own win, and the
switch that turns it off. The real replica ports are tested in tests/integration/test_serve.py."""

from __future__ import annotations

import pytest

from serve import direct_ingress


def test_enable_sets_direct_ingress_and_keeps_what_the_user_set() -> None:
    env = {"RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": "41000"}
    assert direct_ingress.enable(env, first_port=30000, ports=10)
    assert env["RAY_SERVE_ENABLE_DIRECT_INGRESS"] == "1"
    assert env["RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD"] == "0"
    assert env["RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT"] == "41000"  # the user's
    assert env["RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT"] == "30009"
    assert "RAY_SERVE_ENABLE_HA_PROXY" not in env  # it would bind beyond loopback


def test_switched_off_sets_nothing() -> None:
    env = {direct_ingress.ENABLE_ENV: "0"}
    assert not direct_ingress.enable(env)
    assert env == {direct_ingress.ENABLE_ENV: "0"}


@pytest.mark.parametrize("first, ports", [(80, 10), (65530, 10), (30000, 0)])
def test_a_port_range_outside_the_unprivileged_ports_is_refused(first: int, ports: int) -> None:
    with pytest.raises(ValueError, match="direct ingress ports"):
        direct_ingress.settings(first_port=first, ports=ports)
