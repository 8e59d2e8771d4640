"""The application object handed to every command in ``ctx.obj``.

It builds the settings once and opens Redis and the database lazily, so a command only pays for
what it touches (``slimyq --help`` imports neither rq nor peewee).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slimyq.config import LoadedSettings, Settings, load_settings

if TYPE_CHECKING:
    import peewee
    import redis

    from slimyq.client import Client


class App:
    def __init__(
        self,
        config_file: str | Path | None = None,
        overrides: Mapping[str, Any] | None = None,
        debug: bool = False,
    ) -> None:
        self.config_file = config_file
        self.overrides = dict(overrides or {})
        self.debug = debug

    @cached_property
    def loaded(self) -> LoadedSettings:
        from slimyq import logs  # every command logs in the chosen format

        loaded = load_settings(config_file=self.config_file, overrides=self.overrides)
        logs.setup(loaded.settings.log_format)
        if loaded.settings.jobs:  # the registry (and its pydantic models) only when there is news for it
            from slimyq.jobs import registry

            registry.configure(loaded.settings.jobs, _jobs_source(loaded))
        return loaded

    @property
    def settings(self) -> Settings:
        return self.loaded.settings

    @cached_property
    def redis(self) -> redis.Redis:
        from slimyq import _startup
        from slimyq.redis import connect

        conn = connect(self.settings, on_start=_server_started)
        _startup.settled()
        return conn

    @cached_property
    def client(self) -> Client:
        """The :class:`slimyq.Client` of this command, on its Redis connection: what ``enqueue``
        and ``job show`` go through, as an application would."""
        from slimyq.client import Client

        return Client(settings=self.settings, connection=self.redis)

    @cached_property
    def db(self) -> peewee.Database:
        from slimyq import _startup
        from slimyq.db import open_database

        db = open_database(self.settings)
        _startup.settled()
        return db


def _jobs_source(loaded: LoadedSettings) -> str:
    """Where the ``jobs`` setting came from, for an error naming a module that does not import."""
    source = loaded.sources.get("jobs", "default")
    return f"jobs ({source})"


def _server_started(socket: Path) -> None:
    """Where the embedded server starts, say that it stays (a note on a terminal; cron stays quiet)."""
    from slimyq import render

    render.note(f"started the embedded Valkey server on {socket}; it keeps running for the next commands "
                "(stop it with: slimyq server stop)")
