"""deploy/grafana/*.json and deploy/prometheus/*.yaml: valid syntax and structure, and every metric their PromQL
names is one the code exports (the metric objects of ``shared.metrics`` and the scrape-time collectors)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from shared import metrics
from shared.queue import PRIORITY_LEVELS, all_queue_names
from tests.conftest import make_settings
from worker.capacity import Capacity
from worker.metrics_server import ChannelHealth

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
METRIC_NAME = re.compile(r"\bimagejobs_[a-z_]+\b")
_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def exported_names() -> set[str]:
    names: set[str] = set()
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            kind = str(value._type)  # the sample names follow from the type
            names.update(value._name + suffix for suffix in _SUFFIXES.get(kind, ("",)))
    collectors: list[Any] = [
        metrics.QueueDepth(fakeredis.FakeRedis(), all_queue_names(), sorted(PRIORITY_LEVELS.values())),
        ChannelHealth(lambda: Capacity.in_memory(make_settings()), make_settings()),
    ]
    for collector in collectors:
        names.update(family.name for family in collector.collect())
    return names


def test_exported_names_are_found() -> None:
    names = exported_names()
    assert {"imagejobs_jobs_accepted_total", "imagejobs_job_duration_seconds_bucket", "imagejobs_queue_messages",
            "imagejobs_channel_resting_seconds"} <= names  # fmt: skip


@pytest.mark.parametrize("path", sorted((DEPLOY / "grafana").glob("*.json")), ids=lambda p: p.name)
def test_dashboard_is_valid_and_names_our_metrics(path: Path) -> None:
    dashboard = json.loads(path.read_text())
    assert dashboard["title"] and dashboard["uid"]
    assert dashboard["panels"], "a dashboard without panels"
    exported = exported_names()
    for panel in dashboard["panels"]:
        assert panel["title"] and panel["type"] and panel["targets"], panel
        for target in panel["targets"]:
            used = set(METRIC_NAME.findall(target["expr"]))
            assert used, f"{panel['title']}: no imagejobs metric in {target['expr']!r}"
            assert used <= exported, f"{panel['title']}: {sorted(used - exported)} are not exported"
            assert target["expr"].count("(") == target["expr"].count(")"), target["expr"]


@pytest.mark.parametrize("path", sorted((DEPLOY / "prometheus").glob("*.yaml")), ids=lambda p: p.name)
def test_alert_rules_are_valid_and_name_our_metrics(path: Path) -> None:
    document = yaml.safe_load(path.read_text())
    exported = exported_names()
    alerts = []
    for group in document["groups"]:
        assert set(group) <= {"name", "interval", "rules", "limit"} and group["name"]
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "labels", "annotations", "keep_firing_for"}, rule
            assert isinstance(rule["alert"], str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", rule["alert"])
            assert re.fullmatch(r"\d+[smhd]", rule.get("for", "0s")), rule["for"]
            used = set(METRIC_NAME.findall(rule["expr"]))
            assert used and used <= exported, f"{rule['alert']}: {sorted(used - exported)} are not exported"
            assert rule["expr"].count("(") == rule["expr"].count(")")
            alerts.append(rule["alert"])
    # backlog, upstream errors and webhook failures are each alerted on
    assert {"ImagejobsBacklogGrowing", "ImagejobsUpstreamErrorRate", "ImagejobsWebhookFailures"} <= set(alerts)
