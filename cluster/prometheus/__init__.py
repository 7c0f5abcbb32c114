"""Prometheus configuration for benchmatch: the scrape config template, recording and alerting rules.

The files are plain Prometheus YAML so that `promtool` checks them and a hand-started Prometheus can
use them as they are; `cluster.prometheus_server.render_config` fills in the parts that depend on
the running Ray cluster (its service-discovery file, extra static targets, intervals).
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
CONFIG_TEMPLATE = HERE / "prometheus.yaml"
# Every rules file matches this glob; promtool unit tests live in *_test.yaml and are not rule files.
RULE_FILES = (HERE / "rules.recording.yaml", HERE / "rules.alerts.yaml")
RULE_TESTS = (HERE / "alerts_test.yaml",)
