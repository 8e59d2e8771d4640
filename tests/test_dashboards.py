"""docs/grafana-dashboard.json imports (Grafana's export format, a Prometheus datasource input) and
docs/alerts.yml holds the three rules the README promises; every expression names metrics that
`slimyq metrics` really exposes."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import redis

from slimyq.config import Settings
from slimyq.inspect import prom

DOCS = Path(__file__).resolve().parent.parent / "docs"
METRIC = re.compile(r"\b(slimyq_[a-z0-9_]+)\b")
SUFFIXES = {"histogram": ("_bucket", "_sum", "_count"), "counter": ("_total",), "gauge": ("",)}


def exposed(r: redis.Redis) -> set[str]:
    """Every sample name `slimyq metrics` can print (from each family's name and type)."""
    names = set()
    for family in prom.registry(r, Settings(redis_url="redis://unused")).collect():
        names.update(family.name + suffix for suffix in SUFFIXES[family.type])
    return names


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in dashboard["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def test_the_dashboard_imports_and_names_real_metrics(r: redis.Redis) -> None:
    dashboard = json.loads((DOCS / "grafana-dashboard.json").read_text())
    assert [i["name"] for i in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    assert dashboard["uid"] and dashboard["title"] and isinstance(dashboard["schemaVersion"], int)
    assert dashboard["id"] is None  # an export: Grafana assigns the id on import
    names = exposed(r)
    ids = [p["id"] for p in panels(dashboard)]
    assert len(ids) == len(set(ids))
    charts = [p for p in panels(dashboard) if p["type"] != "row"]
    assert {"Queues", "Jobs", "Database", "OpenAI"} <= {p["title"] for p in panels(dashboard) if p["type"] == "row"}
    used = set()
    for p in charts:
        assert p["targets"], p["title"]
        assert {"h", "w", "x", "y"} <= p["gridPos"].keys() and p["gridPos"]["x"] + p["gridPos"]["w"] <= 24
        for target in p["targets"]:
            found = METRIC.findall(target["expr"])
            assert found, (p["title"], target["expr"])
            assert set(found) <= names, (p["title"], set(found) - names)
            used.update(found)
    assert {"slimyq_db_query_duration_seconds_bucket", "slimyq_openai_tokens_total", "slimyq_db_connections",
            "slimyq_openai_request_duration_seconds_bucket", "slimyq_jobs_total"} <= used


def alert_rules(text: str) -> dict[str, str]:
    """``alert name -> expression`` from the rule file (one-line or ``|`` block expressions)."""
    rules: dict[str, str] = {}
    name = None
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"\s*- alert: (\S+)$", line)
        if m:
            name = m.group(1)
            continue
        m = re.match(r"(\s*)expr: ?(.*)$", line)
        if m and name:
            expr = m.group(2)
            if expr == "|":
                indent = len(m.group(1))
                body = []
                for follow in lines[i + 1:]:
                    if follow.strip() and len(follow) - len(follow.lstrip()) <= indent:
                        break
                    body.append(follow.strip())
                expr = " ".join(body)
            rules[name] = expr
    return rules


def test_the_alert_examples_cover_backlog_failures_and_workers(r: redis.Redis) -> None:
    text = (DOCS / "alerts.yml").read_text()
    assert "\t" not in text and text.startswith("#") and "\ngroups:\n" in text
    rules = alert_rules(text)
    assert {"SlimyqBacklogOld", "SlimyqFailureRateHigh", "SlimyqNoLiveWorker"} <= rules.keys()
    assert "slimyq_queue_oldest_job_age_seconds" in rules["SlimyqBacklogOld"]
    assert 'outcome="failed"' in rules["SlimyqFailureRateHigh"]
    assert "slimyq_workers" in rules["SlimyqNoLiveWorker"]
    names = exposed(r)
    for alert, expr in rules.items():
        found = set(METRIC.findall(expr))
        assert found and found <= names, (alert, found - names)
    assert text.count("- alert:") == len(rules)
    assert text.count("severity:") == len(rules) and text.count("summary:") == len(rules)
