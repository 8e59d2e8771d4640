"""Settings: the example file, precedence, config file search, paths and error messages."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path

import pytest
from pydantic import ValidationError

from slimyq.config import (
    ENV_KEYS,
    QueueSettings,
    Settings,
    default_data_dir,
    find_config_file,
    flat_values,
    load_settings,
)
from slimyq.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[1] / "config.example.toml"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _flat_toml(data: dict, prefix: str = "") -> dict:
    out: dict = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flat_toml(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


# ----------------------------------------------------------------- config.example.toml


def test_example_file_loads_and_equals_the_defaults(tmp_path: Path) -> None:
    loaded = load_settings(config_file=EXAMPLE, env={}, cwd=tmp_path)
    assert loaded.config_file == EXAMPLE
    assert loaded.settings == Settings()
    assert flat_values(loaded.settings) == flat_values(Settings())
    assert set(loaded.sources.values()) == {f"file {EXAMPLE}"}


def test_example_file_covers_every_setting() -> None:
    expected = set(flat_values(Settings()))
    assert "queues.database.keep_failed" in expected  # queues are expanded
    documented = set(_flat_toml(tomllib.loads(EXAMPLE.read_text())))
    assert sorted(expected - documented) == [], "settings missing from config.example.toml"
    assert sorted(documented - expected) == [], "config.example.toml documents unknown keys"


def test_every_example_key_has_a_comment_and_env_overrides_are_named() -> None:
    lines = EXAMPLE.read_text().splitlines()
    for i, line in enumerate(lines):
        if re.match(r"^\w+ = ", line):
            assert lines[i - 1].startswith("#"), f"no comment above {line!r}"
    text = EXAMPLE.read_text()
    for name in ENV_KEYS:
        assert name in text


def test_defaults() -> None:
    s = Settings()
    assert [(n, q.concurrency) for n, q in s.queues.items()] == [("chat", 5), ("database", 10), ("audit", 2)]
    assert {q.attempts for q in s.queues.values()} == {3}
    assert s.queue("database").keep_finished == 50 and s.queue("database").keep_failed == 100
    assert (s.chat.model, s.chat.max_tokens, s.chat.temperature) == ("gpt-4o-mini", 180, 0.7)
    assert (s.rate_limit.requests, s.rate_limit.window) == (10, 60)
    assert s.data_dir == default_data_dir()
    assert s.embedded_redis
    assert s.valkey_socket == s.data_dir / "valkey" / "valkey.sock"
    assert s.effective_database_url == f"sqlite:///{s.data_dir / 'slimyq.sqlite3'}"


def test_retry_delays() -> None:
    assert Settings().queue("chat").retry_delays() == [2, 4]
    assert QueueSettings(concurrency=1, timeout=1, attempts=4, backoff_base=1.5).retry_delays() == [1.5, 3, 6]
    assert QueueSettings(concurrency=1, timeout=1, attempts=3, backoff="fixed").retry_delays() == [2, 2]
    assert QueueSettings(concurrency=1, timeout=1, attempts=1).retry_delays() == []


def test_settings_are_frozen(tmp_path: Path) -> None:
    loaded = load_settings(env={}, cwd=tmp_path)
    with pytest.raises(ValidationError):
        loaded.settings.redis_url = "redis://elsewhere"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        loaded.settings.chat.model = "other"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        loaded.settings.queue("chat").concurrency = 99  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        loaded.settings = Settings()  # type: ignore[misc]


def test_unknown_queue_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="known queues: chat, database, audit"):
        Settings().queue("emails")


# ----------------------------------------------------------------- precedence

LAYERS = ["default", "file", "dotenv", "env", "flag"]


@pytest.mark.parametrize("top", LAYERS)
def test_precedence_flag_env_dotenv_file_default(tmp_path: Path, top: str) -> None:
    """Each layer beats every layer below it; only layers up to ``top`` are present."""
    present = LAYERS[: LAYERS.index(top) + 1]
    env: dict[str, str] = {}
    overrides = {}
    config = None
    if "file" in present:
        config = write(tmp_path / "conf.toml", 'redis_url = "redis://file/0"\n[chat]\nmodel = "file-model"\n')
    if "dotenv" in present:
        write(tmp_path / ".env", "REDIS_URL=redis://dotenv/0\nOPENAI_MODEL=dotenv-model\n")
    if "env" in present:
        env = {"REDIS_URL": "redis://env/0", "OPENAI_MODEL": "env-model"}
    if "flag" in present:
        overrides = {"redis_url": "redis://flag/0", "chat.model": "flag-model"}
    loaded = load_settings(config_file=config, overrides=overrides, env=env, cwd=tmp_path)
    expected_url, expected_source = {
        "default": ("", "default"),
        "file": ("redis://file/0", f"file {config}"),
        "dotenv": ("redis://dotenv/0", ".env REDIS_URL"),
        "env": ("redis://env/0", "env REDIS_URL"),
        "flag": ("redis://flag/0", "flag"),
    }[top]
    assert loaded.settings.redis_url == expected_url
    assert loaded.sources["redis_url"] == expected_source
    assert loaded.settings.chat.model == ("gpt-4o-mini" if top == "default" else f"{top}-model")
    assert loaded.sources["chat.model"] == expected_source.replace("REDIS_URL", "OPENAI_MODEL")


def test_dotenv_never_overrides_a_real_environment_variable(tmp_path: Path) -> None:
    write(tmp_path / ".env", "REDIS_URL=redis://dotenv/0\nDATABASE_URL=sqlite:///dotenv.db\nOPENAI_MODEL=m\n")
    env = {"REDIS_URL": "redis://env/0", "DATABASE_URL": ""}
    loaded = load_settings(env=env, cwd=tmp_path)
    assert (loaded.settings.redis_url, loaded.sources["redis_url"]) == ("redis://env/0", "env REDIS_URL")
    # set but empty is still a real variable: .env does not fill it in, the value stays unset
    assert (loaded.settings.database_url, loaded.sources["database_url"]) == ("", "default")
    assert (loaded.settings.chat.model, loaded.sources["chat.model"]) == ("m", ".env OPENAI_MODEL")


def test_flag_given_as_none_is_ignored(tmp_path: Path) -> None:
    loaded = load_settings(overrides={"redis_url": None}, env={"REDIS_URL": "redis://env/0"}, cwd=tmp_path)
    assert loaded.sources["redis_url"] == "env REDIS_URL"


def test_unknown_override_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"redis_ur.*did you mean 'redis_url'"):
        load_settings(overrides={"redis_ur": "redis://x"}, env={}, cwd=tmp_path)


# ----------------------------------------------------------------- config file search


def test_config_file_search_order(tmp_path: Path) -> None:
    cwd, xdg = tmp_path / "cwd", tmp_path / "xdg"
    explicit = write(tmp_path / "explicit.toml", '[chat]\nmodel = "explicit"\n')
    from_env = write(tmp_path / "from-env.toml", '[chat]\nmodel = "from-env"\n')
    local = write(cwd / "slimyq.toml", '[chat]\nmodel = "local"\n')
    user = write(xdg / "slimyq" / "config.toml", '[chat]\nmodel = "user"\n')
    env = {"SLIMYQ_CONFIG": str(from_env), "XDG_CONFIG_HOME": str(xdg)}

    def model(config: Path | None, env: dict[str, str]) -> tuple[str, Path | None]:
        loaded = load_settings(config_file=config, env=env, cwd=cwd)
        return loaded.settings.chat.model, loaded.config_file

    assert model(explicit, env) == ("explicit", explicit)
    assert model(None, env) == ("from-env", from_env)
    del env["SLIMYQ_CONFIG"]
    assert model(None, env) == ("local", local)
    local.unlink()
    assert model(None, env) == ("user", user)
    user.unlink()
    assert model(None, env) == ("gpt-4o-mini", None)


def test_slimyq_config_may_come_from_dotenv(tmp_path: Path) -> None:
    conf = write(tmp_path / "conf" / "c.toml", '[chat]\nmodel = "dotenv-config"\n')
    write(tmp_path / ".env", f"SLIMYQ_CONFIG={conf}\n")
    assert load_settings(env={}, cwd=tmp_path).settings.chat.model == "dotenv-config"


def test_relative_config_path_resolves_against_the_working_directory(tmp_path: Path) -> None:
    write(tmp_path / "etc" / "q.toml", '[chat]\nmodel = "relative"\n')
    assert find_config_file("etc/q.toml", {}, tmp_path) == tmp_path / "etc" / "q.toml"
    assert load_settings(config_file="etc/q.toml", env={}, cwd=tmp_path).settings.chat.model == "relative"


@pytest.mark.parametrize("how", ["flag", "env"])
def test_missing_named_config_file_is_a_config_error(tmp_path: Path, how: str) -> None:
    missing = tmp_path / "nope.toml"
    config, env = (missing, {}) if how == "flag" else (None, {"SLIMYQ_CONFIG": str(missing)})
    with pytest.raises(ConfigError) as info:
        load_settings(config_file=config, env=env, cwd=tmp_path)
    assert str(missing) in str(info.value)
    assert ("--config" if how == "flag" else "SLIMYQ_CONFIG") in str(info.value)
    assert info.value.exit_code == 2


# ----------------------------------------------------------------- paths


def test_relative_data_dir_in_a_file_resolves_against_the_files_folder(tmp_path: Path) -> None:
    conf = write(tmp_path / "etc" / "slimyq" / "config.toml", 'data_dir = "state"\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    settings = load_settings(config_file=conf, env={}, cwd=elsewhere).settings
    assert settings.data_dir == tmp_path / "etc" / "slimyq" / "state"
    assert settings.sqlite_path == tmp_path / "etc" / "slimyq" / "state" / "slimyq.sqlite3"


def test_relative_data_dir_from_env_or_flag_resolves_against_the_working_directory(tmp_path: Path) -> None:
    assert load_settings(env={"SLIMYQ_DATA_DIR": "d"}, cwd=tmp_path).settings.data_dir == tmp_path / "d"
    flag = load_settings(overrides={"data_dir": "f"}, env={}, cwd=tmp_path)
    assert (flag.settings.data_dir, flag.sources["data_dir"]) == (tmp_path / "f", "flag")


def test_empty_data_dir_means_the_user_data_dir(tmp_path: Path) -> None:
    conf = write(tmp_path / "c.toml", 'data_dir = ""\n')
    assert load_settings(config_file=conf, env={}, cwd=tmp_path).settings.data_dir == default_data_dir()


# ----------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("text", "key", "hint"),
    [
        ('redis_ur = "redis://x"\n', "redis_ur", "did you mean 'redis_url'"),
        ('[chat]\nmodle = "x"\n', "chat.modle", "did you mean 'chat.model'"),
        ("[queues.emails]\nconcurrency = 1\n", "queues.emails.concurrency", "queues are chat, database"),
        ("[queues.emails]\n", "queues.emails", "queues are chat, database, audit"),
        ("[queues.chat]\nconcurency = 1\n", "queues.chat.concurency", "mean 'queues.chat.concurrency'"),
        ("[zzz]\nqqq = 1\n", "zzz.qqq", "see config.example.toml"),
    ],
)
def test_unknown_key_names_the_key_the_file_and_a_suggestion(
    tmp_path: Path, text: str, key: str, hint: str
) -> None:
    conf = write(tmp_path / "slimyq.toml", text)
    with pytest.raises(ConfigError) as info:
        load_settings(env={}, cwd=tmp_path)
    message = str(info.value)
    assert f"'{key}'" in message and str(conf) in message and hint in message
    assert "\n" not in message
    assert info.value.exit_code == 2


@pytest.mark.parametrize(
    ("text", "key", "allowed"),
    [
        ("[queues.database]\nconcurrency = 0\n", "queues.database.concurrency", "whole number from 1 to 500"),
        ('[queues.chat]\nbackoff = "linear"\n', "queues.chat.backoff", "'exponential' or 'fixed'"),
        ('history = "maybe"\n', "history", "true or false"),
        ("[chat]\ntemperature = 5\n", "chat.temperature", "from 0 to 2"),
        ("[chat]\nrequest_timeout = 0\n", "chat.request_timeout", "greater than 0 and at most 600"),
        ('[chat]\nmodel = ""\n', "chat.model", "non-empty string"),
        ("[rate_limit]\nwindow = 1.5\n", "rate_limit.window", "whole number"),
        ('redis_url = "http://cache:6379"\n', "redis_url", "redis:// or rediss:// or unix://"),
        ('database_url = "just-a-name"\n', "database_url", "sqlite:///"),
        ('[chat]\nbase_url = "ftp://x"\n', "chat.base_url", "http:// or https://"),
        ('chat = "gpt"\n', "chat", "must be a table"),
        ("[queues]\nchat = 5\n", "queues.chat", "must be a table"),
        ("redis_url = { a = 1 }\n", "redis_url.a", "unknown key"),
    ],
)
def test_bad_value_names_the_key_the_file_and_what_is_allowed(
    tmp_path: Path, text: str, key: str, allowed: str
) -> None:
    conf = write(tmp_path / "conf.toml", text)
    with pytest.raises(ConfigError) as info:
        load_settings(config_file=conf, env={}, cwd=tmp_path)
    message = str(info.value)
    assert key in message and str(conf) in message and allowed in message, message
    assert "\n" not in message
    assert info.value.exit_code == 2


def test_bad_value_from_the_environment_names_the_variable_and_hides_the_password(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env={"REDIS_URL": "http://admin:hunter2@cache"}, cwd=tmp_path)
    message = str(info.value)
    assert "redis_url" in message and "env REDIS_URL" in message
    assert "hunter2" not in message and "admin:***@cache" in message


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    conf = write(tmp_path / "conf.toml", "redis_url = \n")
    with pytest.raises(ConfigError, match=re.escape(str(conf)) + ".*not valid TOML"):
        load_settings(config_file=conf, env={}, cwd=tmp_path)


def test_several_bad_values_are_all_reported(tmp_path: Path) -> None:
    conf = write(tmp_path / "conf.toml", "[queues.chat]\nconcurrency = 0\nattempts = 0\n")
    with pytest.raises(ConfigError) as info:
        load_settings(config_file=conf, env={}, cwd=tmp_path)
    assert len(str(info.value).splitlines()) == 2


def test_jobs_setting_takes_module_names_from_the_file_or_the_environment(tmp_path: Path) -> None:
    (tmp_path / "slimyq.toml").write_text('jobs = ["myapp.jobs", "other"]\n')
    loaded = load_settings(env={}, cwd=tmp_path)
    assert loaded.settings.jobs == ("myapp.jobs", "other")
    assert load_settings(env={"SLIMYQ_JOBS": "a.b, c"}, cwd=tmp_path).settings.jobs == ("a.b", "c")
    assert load_settings(env={}, cwd=tmp_path / "nowhere").settings.jobs == ()
    (tmp_path / "slimyq.toml").write_text('jobs = ["my app"]\n')
    with pytest.raises(ConfigError, match=r"jobs = \[\"my app\"\] in .*: 'my app' is not a module name"):
        load_settings(env={}, cwd=tmp_path)
