"""Settings: one frozen, typed object built once per command.

Precedence, highest first: CLI flags > environment (and ``./.env``, which never overrides a real
environment variable, even an empty one) > TOML config file > built-in defaults. An empty value
means "unset". Every effective value remembers where it came from, for ``slimyq config show``.
Config file search: ``--config PATH``, ``$SLIMYQ_CONFIG``, ``./slimyq.toml``,
``$XDG_CONFIG_HOME/slimyq/config.toml``. Relative paths in a file resolve against its folder.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import annotated_types as at
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator
from pydantic.fields import FieldInfo

from slimyq import QUEUE_NAMES
from slimyq.errors import ConfigError
from slimyq.redact import mask_secret, redact_url

_MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def default_data_dir() -> Path:
    from platformdirs import user_data_dir

    return Path(user_data_dir("slimyq", appauthor=False))


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class QueueSettings(_Section):
    concurrency: int = Field(ge=1, le=500)
    processes: int = Field(default=1, ge=1, le=64, description="worker processes sharing the concurrency")
    timeout: int = Field(ge=1, le=86_400, description="seconds a job may run before it is failed")
    attempts: int = Field(default=3, ge=1, le=25, description="first run plus retries")
    backoff: Literal["exponential", "fixed"] = "exponential"
    backoff_base: float = Field(default=2.0, gt=0, le=3600, description="seconds before the first retry")
    keep_finished: int = Field(default=50, ge=0, le=1_000_000)
    keep_failed: int = Field(default=100, ge=0, le=1_000_000)
    batch_transaction: bool = Field(
        default=False, description="run each claimed batch in one database transaction, a savepoint per job")

    def retry_delays(self) -> list[float]:
        """Delays before each retry: exponential 2, 4, 8 ... or fixed."""
        retries = self.attempts - 1
        if self.backoff == "fixed":
            return [self.backoff_base] * retries
        return [self.backoff_base * (2**i) for i in range(retries)]


_QUEUE_DEFAULTS: dict[str, dict[str, Any]] = {
    "chat": {"concurrency": 5, "timeout": 60},
    "database": {"concurrency": 10, "timeout": 30, "batch_transaction": True},
    "audit": {"concurrency": 2, "timeout": 600},
}


def _default_queues() -> dict[str, QueueSettings]:
    return {name: QueueSettings(**_QUEUE_DEFAULTS[name]) for name in QUEUE_NAMES}


def _check_scheme(value: str, schemes: tuple[str, ...]) -> str:
    """Empty, or a URL with one of ``schemes`` (any scheme when ``schemes`` is empty)."""
    scheme, sep, _ = value.partition("://")
    if value and (not sep or (schemes and scheme.lower() not in schemes)):
        allowed = " or ".join(f"{s}://" for s in schemes) if schemes else "a scheme such as sqlite:///"
        raise ValueError(f"must be empty or a URL starting with {allowed}")
    return value


class ChatSettings(_Section):
    api_key: str = ""
    base_url: str = ""
    model: str = Field(default="gpt-4o-mini", min_length=1)
    max_tokens: int = Field(default=180, ge=1, le=32_000)
    temperature: float = Field(default=0.7, ge=0, le=2)
    request_timeout: float = Field(default=30.0, gt=0, le=600)

    @field_validator("base_url")
    @classmethod
    def _http(cls, value: str) -> str:
        return _check_scheme(value, ("http", "https"))


class RateLimitSettings(_Section):
    requests: int = Field(default=10, ge=1, le=1_000_000)
    window: int = Field(default=60, ge=1, le=86_400, description="seconds")


class WorkerSettings(_Section):
    shutdown_grace: float = Field(default=30.0, ge=0, le=3600)
    heartbeat: float = Field(default=5.0, gt=0, le=300)
    abandoned_after: float = Field(default=20.0, gt=0, le=3600, validate_default=True)
    max_job_size: int = Field(default=16 * 1024 * 1024, ge=1024, le=2**31 - 1,
                              description="bytes of job data (decompressed) a worker accepts; larger is refused")

    @field_validator("abandoned_after")
    @classmethod
    def _beats_before_abandoned(cls, value: float, info: ValidationInfo) -> float:
        heartbeat = info.data.get("heartbeat")
        if heartbeat is not None and value < 2 * heartbeat:
            raise ValueError(f"must be at least twice worker.heartbeat ({heartbeat:g} s), so that one late "
                             "heartbeat does not make a live worker look dead: raise it or lower the heartbeat")
        return value


class Settings(_Section):
    redis_url: str = ""
    redis_wait_replicas: int = Field(default=0, ge=0, le=16,
                                     description="replicas that must confirm an enqueue (Redis WAIT)")
    redis_wait_timeout: float = Field(default=1.0, gt=0, le=60, description="seconds to wait for them")
    database_url: str = ""
    data_dir: Path = Field(default_factory=default_data_dir)
    history: bool = True
    jobs: tuple[str, ...] = Field(default=(), description="modules declaring job types of your own (myapp.jobs)")
    log_format: Literal["auto", "text", "json"] = "auto"  # auto: text on a terminal or journald, else JSON
    queues: dict[str, QueueSettings] = Field(default_factory=_default_queues)
    chat: ChatSettings = ChatSettings()
    rate_limit: RateLimitSettings = RateLimitSettings()
    worker: WorkerSettings = WorkerSettings()

    @field_validator("redis_url", "database_url")
    @classmethod
    def _url(cls, value: str, info: ValidationInfo) -> str:
        redis_schemes = ("redis", "rediss", "unix", "redis+sentinel")
        return _check_scheme(value, redis_schemes if info.field_name == "redis_url" else ())

    @field_validator("jobs", mode="before")
    @classmethod
    def _modules(cls, value: Any) -> Any:
        """A list of module names; from the environment, a comma-separated string."""
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, list | tuple):
            for name in value:
                if not isinstance(name, str) or not _MODULE_NAME.match(name):
                    raise ValueError(f"{name!r} is not a module name (e.g. \"myapp.jobs\")")
        return value

    @property
    def queue_names(self) -> list[str]:
        return list(self.queues)

    @property
    def embedded_redis(self) -> bool:
        return not self.redis_url

    @property
    def valkey_socket(self) -> Path:
        """The unix socket of the embedded Valkey server (used when ``redis_url`` is empty)."""
        return self.data_dir / "valkey" / "valkey.sock"

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
    "SLIMYQ_JOBS": "jobs",
    "OPENAI_API_KEY": "chat.api_key",
    "OPENAI_BASE_URL": "chat.base_url",
    "OPENAI_MODEL": "chat.model",
    "SLIMYQ_LOG_FORMAT": "log_format",
}
SECRET_KEYS = frozenset({"chat.api_key"})
URL_KEYS = frozenset({"redis_url", "database_url", "chat.base_url"})
_PATH_KEYS = frozenset({"data_dir"})
_SECTIONS: dict[str, type[_Section]] = {
    "chat": ChatSettings,
    "rate_limit": RateLimitSettings,
    "worker": WorkerSettings,
}


@dataclass(frozen=True)
class LoadedSettings:
    settings: Settings
    sources: Mapping[str, str]  # dotted key -> "default" | "file <path>" | "env NAME" | ".env NAME" | "flag"
    config_file: Path | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


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
    """Nested tables to dotted keys. An empty table stays as ``{}`` so it can be checked too."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
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
    keys = {"redis_url", "redis_wait_replicas", "redis_wait_timeout", "database_url", "data_dir", "history",
            "jobs", "log_format"}
    for section, model in _SECTIONS.items():
        keys.update(f"{section}.{name}" for name in model.model_fields)
    for queue in QUEUE_NAMES:
        keys.update(f"queues.{queue}.{name}" for name in QueueSettings.model_fields)
    return keys


def _read_toml(path: Path) -> dict[str, Any]:
    import tomllib  # only with a config file

    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc}); fix the syntax") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    flat = _flatten(data)
    known, tables = _known_keys(), {*_SECTIONS, "queues", *(f"queues.{q}" for q in QUEUE_NAMES)}
    for key, value in list(flat.items()):
        if key in tables:
            if value == {}:
                del flat[key]
                continue
            raise ConfigError(f"{path}: {key!r} must be a table ([{key}]), not a single value")
        if key not in known:
            raise ConfigError(f"{path}: unknown key {key!r}{_suggest(key, known)}")
        if isinstance(value, Mapping):
            raise ConfigError(f"{path}: {key!r} must be a single value, not a table")
    for key in _PATH_KEYS & flat.keys():
        raw = flat[key]
        if isinstance(raw, str) and raw and not Path(raw).expanduser().is_absolute():
            flat[key] = str(path.parent / raw)
    return flat


def _suggest(key: str, known: set[str]) -> str:
    parts = key.split(".")
    if parts[0] == "queues" and len(parts) > 1 and parts[1] not in QUEUE_NAMES:
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
    dotenv = _dotenv(cwd)
    if not env.get("SLIMYQ_CONFIG") and dotenv.get("SLIMYQ_CONFIG"):
        env["SLIMYQ_CONFIG"] = dotenv["SLIMYQ_CONFIG"]
    tree: dict[str, Any] = {"data_dir": "", "queues": {q: dict(_QUEUE_DEFAULTS[q]) for q in QUEUE_NAMES}}
    sources: dict[str, str] = dict.fromkeys(_known_keys(), "default")

    path = find_config_file(config_file, env, cwd)
    if path is not None:
        for key, value in _read_toml(path).items():
            _set(tree, key, value)
            sources[key] = f"file {path}"

    for name, key in ENV_KEYS.items():
        if env.get(name):
            _set(tree, key, env[name])
            sources[key] = f"env {name}"
        elif name not in env and dotenv.get(name):
            _set(tree, key, dotenv[name])
            sources[key] = f".env {name}"

    for key, value in (overrides or {}).items():
        if value is not None:
            if key not in sources:
                raise ConfigError(f"unknown setting {key!r}{_suggest(key, set(sources))}")
            _set(tree, key, value)
            sources[key] = "flag"

    data_dir = Path(tree["data_dir"] or default_data_dir()).expanduser()
    tree["data_dir"] = str(data_dir if data_dir.is_absolute() else cwd / data_dir)

    try:
        settings = Settings.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, sources)) from None
    return LoadedSettings(settings=settings, sources=sources, config_file=path)


def _field(loc: tuple[str | int, ...]) -> FieldInfo | None:
    keys = [str(p) for p in loc]
    if len(keys) == 3 and keys[0] == "queues":
        return QueueSettings.model_fields.get(keys[2])
    if len(keys) == 2 and keys[0] in _SECTIONS:
        return _SECTIONS[keys[0]].model_fields.get(keys[1])
    return Settings.model_fields.get(keys[0]) if len(keys) == 1 else None


def _allowed(info: FieldInfo) -> str:
    """What a field accepts, in words: 'a whole number from 1 to 500', "'exponential' or 'fixed'"."""
    kind = info.annotation
    if kind is bool:
        return "true or false"
    if get_origin(kind) is Literal:
        return " or ".join(repr(v) for v in get_args(kind))
    if kind not in (int, float, str, Path):
        return ""
    noun = "a whole number" if kind is int else "a number" if kind is float else "a string"
    low = high = ""
    for m in info.metadata:
        if isinstance(m, at.Ge | at.Gt):
            low = f"from {m.ge}" if isinstance(m, at.Ge) else f"greater than {m.gt}"
        elif isinstance(m, at.Le):
            high = f"to {m.le}" if low.startswith("from") else f"and at most {m.le}"
        elif isinstance(m, at.MinLen) and m.min_length:
            noun = "a non-empty string"
    return " ".join(p for p in (noun, low, high) if p)


def shown_value(key: str, value: Any) -> Any:
    """A value as it may be shown: secrets masked, URL passwords redacted."""
    if key in SECRET_KEYS:
        return mask_secret(str(value) if value is not None else None)
    if key in URL_KEYS and isinstance(value, str):
        return redact_url(value)
    return value


def _explain(exc: ValidationError, sources: Mapping[str, str]) -> str:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"])
        info = _field(err["loc"])
        allowed = _allowed(info) if info is not None and err["type"] != "value_error" else ""
        detail = f"must be {allowed}" if allowed else str(err["msg"]).removeprefix("Value error, ")
        got = json.dumps(shown_value(key, err.get("input")), default=str)
        src = sources.get(key, "default")
        where = f"in {src.removeprefix('file ')}" if src.startswith("file ") else f"from {src}"
        lines.append(f"{key} = {got} {where}: {detail}")
    return "\n".join(lines)


def flat_values(settings: Settings) -> dict[str, Any]:
    """Every effective value as dotted keys (queues expanded), for ``config show``."""
    return _flatten(settings.model_dump(mode="json"))
