"""In-process sums of database and OpenAI metrics: buckets, drains that forget, labels that fit a field."""

from __future__ import annotations

import pytest

from slimyq.obs import ops


@pytest.fixture(autouse=True)
def clean() -> None:
    ops.drain("q")


def test_a_drain_returns_increments_once_in_the_job_counters_shape() -> None:
    ops.db_query("sqlite", "select", 0.0004, error=False)
    ops.db_query("sqlite", "select", 0.003, error=True)
    ops.db_query("sqlite", "select", 99.0, error=False)
    ops.openai_request("gpt-4o-mini", "ok", 1.2, prompt_tokens=10, completion_tokens=5)
    stats = ops.drain("q")
    assert {len(s) for s in stats} == {4} and {s[0] for s in stats} == {"slimyq:ops:q"}
    assert {s[2] for s in stats} == {"i", "f"}  # HINCRBY / HINCRBYFLOAT, as the completion script applies them
    got = {f: float(v) for _k, f, _kind, v in stats}
    assert got["db|sqlite|select|le|0.0005"] == 1 and got["db|sqlite|select|le|0.005"] == 1
    assert got["db|sqlite|select|le|+Inf"] == 1 and got["db|sqlite|select|count"] == 3
    assert got["db|sqlite|select|sum"] == pytest.approx(99.0034)
    assert got["dberr|sqlite|select"] == 1
    assert got["ai|gpt-4o-mini|ok|le|2.5"] == 1 and got["ai|gpt-4o-mini|ok|count"] == 1
    assert (got["tok|gpt-4o-mini|prompt"], got["tok|gpt-4o-mini|completion"]) == (10, 5)
    assert ops.drain("q") == [] and not ops.pending()


def test_a_duration_on_a_bound_belongs_to_that_bucket() -> None:
    ops.db_query("mysql", "insert", 0.01, error=False)
    got = {f for _k, f, _kind, _v in ops.drain("q")}
    assert "db|mysql|insert|le|0.01" in got


def test_a_model_name_cannot_break_the_field_layout() -> None:
    ops.openai_request("ft:gpt|evil", "ok", 0.2)
    got = {f for _k, f, _kind, _v in ops.drain("q")}
    assert "ai|ft:gpt_evil|ok|count" in got


def test_connections_are_counted_per_backend() -> None:
    before = ops.connections().get("postgresql", 0)
    ops.connection_opened("postgresql")
    ops.connection_opened("postgresql")
    ops.connection_closed("postgresql")
    assert ops.connections()["postgresql"] == before + 1
    ops.connection_closed("postgresql")
    assert ops.connections()["postgresql"] == before
