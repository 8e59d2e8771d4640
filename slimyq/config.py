"""Settings: one frozen, typed object built once per command.

Precedence, highest first: CLI flags > environment (and ``./.env``, which never overrides the
real environment) > TOML config file > built-in defaults. Every effective value remembers where it
came from, for ``slimyq config show``.

Config file search: ``--config PATH``, ``$SLIMYQ_CONFIG``, ``./slimyq.toml``,
``$XDG_CONFIG_HOME/slimyq/config.toml``. Relative paths inside a file resolve against its folder.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from slimyq import QUEUE_NAMES
from slimyq.errors import ConfigError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class QueueSettings(_Section):
    concurrency: int = Field(ge=1, le=500)
    timeout: int = Field(ge=1, le=86_400, description="seconds a job may run before it is failed")
    attempts: int = Field(default=3, ge=1, le=25, description="first run plus retries")
    backoff: Literal["exponential", "fixed"] = "exponential"
    backoff_base: float = Field(default=2.0, gt=0, le=3600, description="seconds before the first retry")
    keep_finished: int = Field(default=50, ge=0, le=1_000_000)
    keep_failed: int = Field(default=100, ge=0, le=1_000_000)

    def retry_delays(self) -> list[float]:
        """Delays before each retry: exponential 2, 4, 8 ... or fixed."""
        retries = self.attempts - 1
        if self.backoff == "fixed":
            return [self.backoff_base] * retries
        return [self.backoff_base * (2**i) for i in range(retries)]


_QUEUE_DEFAULTS: dict[str, dict[str, Any]] = {
    "chat": {"concurrency": 5, "timeout": 60},
    "database": {"concurrency": 10, "timeout": 30},
    "audit": {"concurrency": 2, "timeout": 600},
}


class ChatSettings(_Section):
    api_key: str = ""
    base_url: str = ""
    model: str = Field(default="gpt-4o-mini", min_length=1)
    max_tokens: int = Field(default=180, ge=1, le=32_000)
    temperature: float = Field(default=0.7, ge=0, le=2)
    request_timeout: float = Field(default=30.0, gt=0, le=600)


class RateLimitSettings(_Section):
    requests: int = Field(default=10, ge=1, le=1_000_000)
    window: int = Field(default=60, ge=1, le=86_400, description="seconds")


class WorkerSettings(_Section):
    shutdown_grace: float = Field(default=30.0, ge=0, le=3600)
    heartbeat: float = Field(default=5.0, gt=0, le=300)
    abandoned_after: float = Field(default=20.0, gt=0, le=3600)


class Settings(_Section):
    redis_url: str = ""
    database_url: str = ""
    data_dir: Path = Path()
    history: bool = True
    queues: dict[str, QueueSettings] = Field(default_factory=dict)
    chat: ChatSettings = ChatSettings()
    rate_limit: RateLimitSettings = RateLimitSettings()
    worker: WorkerSettings = WorkerSettings()

    @property
    def queue_names(self) -> list[str]:
        return list(self.queues)

    @property
    def embedded_redis(self) -> bool:
        return not self.redis_url

    @property
    def sqlite_path(self) -> Path:
        return self.data_dir / "slimyq.sqlite3"

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.sqlite_path}"

    def queue(self, name: str) -> QueueSettings:
        try:
            return self.queues[name]
        except KeyError:
            raise ConfigError(f"unknown queue {name!r}; known queues: {', '.join(self.queues)}") from None


ENV_KEYS: dict[str, str] = {
    "REDIS_URL": "redis_url",
    "DATABASE_URL": "database_url",
    "SLIMYQ_DATA_DIR": "data_dir",
    "OPENAI_API_KEY": "chat.api_key",
    "OPENAI_BASE_URL": "chat.base_url",
    "OPENAI_MODEL": "chat.model",
}
SECRET_KEYS = frozenset({"chat.api_key"})
URL_KEYS = frozenset({"redis_url", "database_url", "chat.base_url"})
_PATH_KEYS = frozenset({"data_dir"})


@dataclass(frozen=True)
class LoadedSettings:
    settings: Settings
    sources: Mapping[str, str]  # dotted key -> "default" | "file <path>" | "env NAME" | ".env NAME" | "flag"
    config_file: Path | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


def default_data_dir() -> Path:
    from platformdirs import user_data_dir

    return Path(user_data_dir("slimyq", appauthor=False))


def _defaults() -> dict[str, Any]:
    return {
        "redis_url": "",
        "database_url": "",
        "data_dir": "",
        "history": True,
        "queues": {name: dict(_QUEUE_DEFAULTS[name]) for name in QUEUE_NAMES},
        "chat": {},
        "rate_limit": {},
        "worker": {},
    }


def find_config_file(explicit: str | Path | None, env: Mapping[str, str], cwd: Path) -> Path | None:
    """The config file to read, or None. An explicitly named file must exist."""
    named = explicit or env.get("SLIMYQ_CONFIG")
    if named:
        path = Path(named).expanduser()
        if not path.is_absolute():
            path = cwd / path
        if not path.is_file():
            how = "--config" if explicit else "SLIMYQ_CONFIG"
            raise ConfigError(f"config file {path} (from {how}) does not exist; fix the path or unset it")
        return path
    local = cwd / "slimyq.toml"
    if local.is_file():
        return local
    xdg = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    user = Path(xdg) / "slimyq" / "config.toml"
    return user if user.is_file() else None


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{dotted}."))
        else:
            out[dotted] = value
    return out


def _set(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def _known_keys() -> set[str]:
    keys = {"redis_url", "database_url", "data_dir", "history"}
    for section, model in (("chat", ChatSettings), ("rate_limit", RateLimitSettings), ("worker", WorkerSettings)):
        keys.update(f"{section}.{name}" for name in model.model_fields)
    for queue in QUEUE_NAMES:
        keys.update(f"queues.{queue}.{name}" for name in QueueSettings.model_fields)
    return keys


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc}); fix the syntax") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    flat = _flatten(data)
    known = _known_keys()
    for key in flat:
        if key not in known:
            hint = _suggest(key, known)
            raise ConfigError(f"{path}: unknown key {key!r}{hint}")
    for key in _PATH_KEYS & flat.keys():
        raw = flat[key]
        if isinstance(raw, str) and raw and not Path(raw).expanduser().is_absolute():
            flat[key] = str(path.parent / raw)
    return flat


def _suggest(key: str, known: set[str]) -> str:
    import difflib

    if key.startswith("queues."):
        queue = key.split(".")[1]
        if queue not in QUEUE_NAMES:
            return f" (queues are {', '.join(QUEUE_NAMES)})"
    close = difflib.get_close_matches(key, sorted(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else "; see config.example.toml for every key"


def _dotenv(cwd: Path) -> dict[str, str]:
    path = cwd / ".env"
    if not path.is_file():
        return {}
    from dotenv import dotenv_values

    return {k: v for k, v in dotenv_values(path).items() if v is not None}


def load_settings(
    *,
    config_file: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> LoadedSettings:
    """Build the effective settings. ``overrides`` are CLI flags as dotted keys (None = not given)."""
    env = dict(os.environ if env is None else env)
    cwd = cwd or Path.cwd()
    tree = _defaults()
    sources: dict[str, str] = dict.fromkeys(_known_keys(), "default")

    path = find_config_file(config_file, env, cwd)
    if path is not None:
        for key, value in _read_toml(path).items():
            _set(tree, key, value)
            sources[key] = f"file {path}"

    dotenv = _dotenv(cwd)
    for name, key in ENV_KEYS.items():
        if name in env and env[name] != "":
            _set(tree, key, env[name])
            sources[key] = f"env {name}"
        elif dotenv.get(name):
            _set(tree, key, dotenv[name])
            sources[key] = f".env {name}"

    for key, value in (overrides or {}).items():
        if value is not None:
            _set(tree, key, value)
            sources[key] = "flag"

    if not tree["data_dir"]:
        tree["data_dir"] = str(default_data_dir())
    tree["data_dir"] = str(Path(tree["data_dir"]).expanduser())

    try:
        settings = Settings.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, sources)) from None
    return LoadedSettings(settings=settings, sources=sources, config_file=path)


def _explain(exc: ValidationError, sources: Mapping[str, str]) -> str:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"])
        where = sources.get(key, "default")
        allowed = err.get("ctx") or {}
        detail = err["msg"]
        if "expected" in allowed:
            detail = f"must be one of {allowed['expected']}"
        lines.append(f"config key {key!r} (from {where}): {detail}; got {err.get('input')!r}")
    return "\n".join(lines)


def flat_values(settings: Settings) -> dict[str, Any]:
    """Every effective value as dotted keys, for ``config show``."""
    data = settings.model_dump(mode="json")
    return _flatten(data)
