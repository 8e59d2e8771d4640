"""`slimyq config show`: effective values, their sources, redaction and config errors."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

REDIS_PASSWORD = "r3dis-Pa55word"
DB_PASSWORD = "db-Pa55word"
API_KEY = "sk-test-0123456789abcdef"
SECRETS = (REDIS_PASSWORD, DB_PASSWORD, API_KEY)


def show_json(cli, *args: str) -> dict:
    result = cli(*args, "config", "show", "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture
def secrets_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", f"redis://admin:{REDIS_PASSWORD}@cache.example:6379/0")
    monkeypatch.setenv("DATABASE_URL", f"postgresql://app:{DB_PASSWORD}@db.example/slimyq")
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)


@pytest.mark.parametrize("fmt", ["table", "json", "ndjson", "csv"])
def test_show_never_prints_secrets(cli, secrets_in_env: None, fmt: str) -> None:
    result = cli("config", "show", "--format", fmt)
    assert result.exit_code == 0, result.stderr
    for secret in SECRETS:
        assert secret not in result.stdout
        assert secret not in result.stderr
    assert "***" in result.stdout
    assert "cache.example" in result.stdout


def test_show_json_redacts_and_names_sources(cli, secrets_in_env: None) -> None:
    data = show_json(cli)
    assert data["redis_url"] == {
        "value": "redis://admin:***@cache.example:6379/0",
        "source": "env REDIS_URL",
        "effective": None,
    }
    assert data["database_url"]["value"] == "postgresql://app:***@db.example/slimyq"
    assert data["chat.api_key"] == {"value": "***", "source": "env OPENAI_API_KEY", "effective": None}


def test_secrets_from_a_file_and_a_flag_are_redacted(cli, tmp_path: Path) -> None:
    conf = tmp_path / "work" / "slimyq.toml"
    conf.write_text(f'[chat]\napi_key = "{API_KEY}"\nbase_url = "https://u:{DB_PASSWORD}@llm.example/v1"\n')
    url = f"rediss://:{REDIS_PASSWORD}@cache.example:6380/2"
    for fmt in ("table", "json"):
        result = cli("--redis-url", url, "config", "show", "--format", fmt)
        assert result.exit_code == 0, result.stderr
        assert not any(s in result.stdout + result.stderr for s in SECRETS)
    data = show_json(cli, "--redis-url", url)
    assert data["redis_url"]["value"] == "rediss://:***@cache.example:6380/2"
    assert data["redis_url"]["source"] == "flag"
    assert data["chat.api_key"] == {"value": "***", "source": f"file {conf}", "effective": None}
    assert data["chat.base_url"]["value"] == "https://u:***@llm.example/v1"


def test_show_lists_every_key_with_defaults_and_effective_notes(cli, isolated_env: Path) -> None:
    from slimyq.config import Settings, flat_values

    data = show_json(cli)
    assert list(data) == list(flat_values(Settings()))
    data_dir = isolated_env / "data"
    assert data["data_dir"] == {"value": str(data_dir), "source": "env SLIMYQ_DATA_DIR", "effective": None}
    assert data["queues.database.concurrency"] == {"value": 10, "source": "default", "effective": None}
    assert data["history"]["value"] is True
    assert data["redis_url"]["value"] == ""
    assert str(data_dir / "valkey" / "valkey.sock") in data["redis_url"]["effective"]
    assert "embedded Valkey" in data["redis_url"]["effective"]
    assert f"sqlite:///{data_dir / 'slimyq.sqlite3'}" in data["database_url"]["effective"]
    assert data["chat.api_key"]["value"] == ""
    assert "fallback mode" in data["chat.api_key"]["effective"]


def test_sources_from_every_layer(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conf = tmp_path / "conf" / "q.toml"
    conf.parent.mkdir()
    conf.write_text('[chat]\nmodel = "from-file"\nmax_tokens = 99\n[queues.audit]\nconcurrency = 3\n')
    (tmp_path / "work" / ".env").write_text("OPENAI_MODEL=from-dotenv\nOPENAI_BASE_URL=http://llm.local/v1\n")
    monkeypatch.setenv("OPENAI_MODEL", "from-env")
    monkeypatch.setenv("SLIMYQ_CONFIG", str(conf))
    data = show_json(cli, "--data-dir", str(tmp_path / "flagdir"))
    assert data["chat.model"] == {"value": "from-env", "source": "env OPENAI_MODEL", "effective": None}
    assert data["chat.base_url"]["source"] == ".env OPENAI_BASE_URL"
    assert data["chat.max_tokens"] == {"value": 99, "source": f"file {conf}", "effective": None}
    assert data["queues.audit.concurrency"]["source"] == f"file {conf}"
    assert data["queues.audit.timeout"]["source"] == "default"
    assert data["data_dir"] == {"value": str(tmp_path / "flagdir"), "source": "flag", "effective": None}


def test_table_has_key_value_source_columns(cli) -> None:
    result = cli("config", "show")
    assert result.exit_code == 0, result.stderr
    header = result.stdout.splitlines()[0]
    assert header.split() == ["key", "value", "source"]  # plain columns without a terminal
    assert "queues.chat.concurrency" in result.stdout
    assert "fallback" in result.stdout
    assert "env SLIMYQ_DATA_DIR" in result.stdout


def test_ndjson_and_csv_are_one_record_per_setting(cli) -> None:
    from slimyq.config import Settings, flat_values

    keys = list(flat_values(Settings()))
    ndjson = cli("config", "show", "--format", "ndjson")
    records = [json.loads(line) for line in ndjson.stdout.splitlines()]
    assert [r["key"] for r in records] == keys
    assert set(records[0]) == {"key", "value", "source", "effective"}
    rows = list(csv.DictReader(io.StringIO(cli("config", "show", "--format", "csv").stdout)))
    assert [r["key"] for r in rows] == keys
    assert next(r for r in rows if r["key"] == "history")["value"] == "true"


def test_unknown_key_exits_2_with_one_line_naming_key_and_file(cli, tmp_path: Path) -> None:
    (tmp_path / "work" / "bad.toml").write_text("[queues.chat]\nconcurency = 3\n")
    result = cli("--config", "bad.toml", "config", "show")
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1
    assert "queues.chat.concurency" in lines[0] and "bad.toml" in lines[0]
    assert "did you mean 'queues.chat.concurrency'" in lines[0]


def test_bad_value_exits_2_naming_key_file_and_allowed_values(cli, tmp_path: Path) -> None:
    (tmp_path / "work" / "slimyq.toml").write_text("[queues.database]\nconcurrency = 0\n")
    result = cli("config", "show")
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1
    assert "queues.database.concurrency" in lines[0] and "slimyq.toml" in lines[0]
    assert "1 to 500" in lines[0]


def test_missing_config_file_exits_2(cli) -> None:
    result = cli("--config", "missing.toml", "config", "show")
    assert result.exit_code == 2
    assert "missing.toml" in result.stderr and "does not exist" in result.stderr


def test_bad_url_in_env_exits_2_without_leaking_the_password(cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", f"http://admin:{REDIS_PASSWORD}@cache.example")
    result = cli("config", "show", "--json")
    assert result.exit_code == 2
    assert "env REDIS_URL" in result.stderr
    assert REDIS_PASSWORD not in result.stdout + result.stderr
