"""PostgreSQL connections carry TCP keepalives and a user timeout (a silent partition surfaces as an
error within seconds), unless the URL sets its own values."""

from __future__ import annotations

import pytest

from slimyq.db import connect_url
from slimyq.db.connect import PG_TCP_PARAMS

pytestmark = pytest.mark.postgres


def test_postgres_connections_detect_silent_partitions(pg_url: str) -> None:
    db = connect_url(pg_url)
    try:
        for key, value in PG_TCP_PARAMS.items():
            assert db.connect_params[key] == value
        raw = db.connection().pgconn
        assert raw.info  # a live libpq connection with those options
        options = {o.keyword.decode(): o.val for o in raw.info}
        assert options["tcp_user_timeout"] == b"6000"
        assert options["keepalives_idle"] == b"3"
    finally:
        db.close()


def test_the_urls_own_values_win(pg_url: str) -> None:
    db = connect_url(f"{pg_url}?keepalives_idle=30&tcp_user_timeout=0")
    try:
        options = {o.keyword.decode(): o.val for o in db.connection().pgconn.info}
        assert options["keepalives_idle"] == b"30"
        assert options["tcp_user_timeout"] == b"0"
    finally:
        db.close()
