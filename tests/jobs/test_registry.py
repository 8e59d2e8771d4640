"""Job types of your own: declared with @job_type, loaded from the ``slimyq.job_types`` entry point
and the ``jobs`` setting, run end to end by a real worker; everything else refused unimported.

The team's package is ``tests/jobpkg`` (its tiny dist-info carries the entry point), put on the
``PYTHONPATH`` of the processes started here: the registry of this test process stays slimyq's own.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import redis as redis_lib
from clientkit import burst, environ, slimyq, write_config

from slimyq import Client, JobFailed
from slimyq.errors import ConfigError
from slimyq.jobs import registry
from slimyq.payloads.common import Payload

ENQUEUE = """
import json, sys
from slimyq import Client, ValidationError
c = Client()
out = {"m1": c.enqueue("ingest_club_metrics", {"clubId": "c1", "members": 12, "userId": "alice"}, job_id="m1").id,
       "g1": c.enqueue("guild-settings", {"guildId": "g1", "mode": "loud"}).id,
       "closed": c.enqueue("ingest_club_metrics", {"clubId": "closed", "members": 1}).id}
try:
    c.enqueue("ingest_club_metrics", {"clubId": "", "members": -1})
except ValidationError as exc:
    out["errors"] = exc.errors
out["heavy"] = sorted(m for m in ("rq", "peewee", "openai") if m in sys.modules)
print(json.dumps(out))
"""


COUNT_OWN_ROWS = """
from slimyq.app import App
from slimyq_testjobs import club_metrics_model
model = club_metrics_model()
db = App().db
with db.bind_ctx([model]):
    print(model.select().count())
"""


@pytest.fixture
def team(redis_url: str, isolated_env: Path) -> dict[str, str]:
    write_config(Path.cwd(), jobs=["slimyq_testjobs_cfg"])
    return environ(with_jobpkg=True, SLIMYQ_TEST_MARKER=str(isolated_env / "unlisted-imported"))


def test_user_job_types_run_end_to_end(team: dict[str, str], r: redis_lib.Redis, isolated_env: Path) -> None:
    done = subprocess.run([sys.executable, "-c", ENQUEUE], env=team, capture_output=True, text=True, check=True)
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["heavy"] == []  # enqueueing a team's types imports no peewee: handlers import it inside
    assert {e["field"] for e in out["errors"]} == {"clubId", "members"}

    # `slimyq enqueue <type>` with options derived from the payload model
    cli = slimyq("enqueue", "ingest-club-metrics", "--club-id", "c2", "--members", "5", "--json", env=team)
    assert cli.returncode == 0, cli.stderr
    m2 = json.loads(cli.stdout)["id"]
    bad = slimyq("enqueue", "ingest-club-metrics", "--club-id", "c3", "--members", "-4", env=team)
    assert bad.returncode == 2 and "--members" in bad.stderr and "greater than or equal to 0" in bad.stderr
    helped = slimyq("enqueue", "--help", env=team)
    assert "ingest-club-metrics" in helped.stdout and "guild-settings" in helped.stdout

    # A job naming a module nobody configured, as a plain RQ client would enqueue it
    from rq import Queue
    from rq.serializers import JSONSerializer

    stray = Queue("database", connection=r, serializer=JSONSerializer).enqueue("slimyq_testjobs_unlisted.handler", x=1)

    burst("database", env=team)
    client = Client(config_file=write_config(isolated_env, name="plain.toml"))  # this process: no team modules
    first = client.wait("m1", timeout=10)
    assert first["success"] is True and first["members"] == 12
    assert client.wait(out["g1"], timeout=10) == {"guildId": "g1", "mode": "loud", "jobId": out["g1"]}
    assert client.wait(m2, timeout=10)["members"] == 5
    with pytest.raises(JobFailed) as closed:
        client.wait(out["closed"], timeout=10)
    assert closed.value.attempts == 1 and closed.value.error_type == "club_closed"  # permanent: no retry
    refused = client.job(stray.id)
    assert refused is not None and refused.status == "failed" and "not a registered slimyq job type" in str(
        refused.error)
    assert not (isolated_env / "unlisted-imported").exists()  # the allowlist: never imported

    # effect once: run m1 again (requeued by hand), its first result comes back, nothing written twice
    again = slimyq("job", "requeue", "m1", env=team)
    assert again.returncode == 0, again.stderr
    burst("database", env=team)
    assert client.wait("m1", timeout=10) == first
    info = client.job("m1", user="alice")
    assert info is not None and info.type == "ingest_club_metrics" and info.user == "alice"
    assert client.job("m1", user="bob") is None

    # stats by type and the history see the team's types like slimyq's own
    by_type = {t.type: t for t in client.stats(["database"], by_type=True)[0].by_type}
    assert by_type["ingest_club_metrics"].completed == 3 and by_type["guild_settings"].completed == 1
    history = slimyq("jobs", "--history", "--type", "ingest-club-metrics", "--json", env=team)
    assert history.returncode == 0, history.stderr
    rows = json.loads(history.stdout)
    assert {row["job_id"] for row in rows} >= {"m1", m2} and sum(row["job_id"] == "m1" for row in rows) == 2
    rows_written = slimyq("audit", "list", "--action", "club_metrics", "--json", env=team)
    assert rows_written.returncode == 0, rows_written.stderr
    assert len(json.loads(rows_written.stdout)) == 2  # m1 (once, though it ran twice) and m2
    # the team's own table, bound to ctx.db: one row per job too (a plain insert: a second run
    # would have failed on the primary key, so once() really kept it to one)
    own = subprocess.run([sys.executable, "-c", COUNT_OWN_ROWS], env=team, capture_output=True, text=True)
    assert own.returncode == 0, own.stderr
    assert own.stdout.split() == ["2"]


def test_a_module_that_does_not_import_is_a_config_error(redis_url: str, isolated_env: Path) -> None:
    write_config(Path.cwd(), jobs=["no_such_team_module"])
    done = slimyq("enqueue", "--help")
    assert done.returncode == 2
    assert "cannot import job module 'no_such_team_module'" in done.stderr and "Traceback" not in done.stderr


def test_a_bad_module_name_is_refused_by_the_settings(redis_url: str, isolated_env: Path) -> None:
    write_config(Path.cwd(), jobs=["not a module"])
    with pytest.raises(ConfigError, match="not a module name"):
        Client()


def test_client_fails_at_construction_on_a_module_that_does_not_import(redis_url: str, isolated_env: Path) -> None:
    write_config(Path.cwd(), jobs=["no_such_team_module"])
    with pytest.raises(ConfigError, match="cannot import job module 'no_such_team_module'"):
        Client()
    assert registry.get("canary").name == "canary"  # reported once; the process's registry still works


class _Thing(Payload):
    name: str


def test_declaration_mistakes_are_caught_at_declaration() -> None:
    with pytest.raises(ConfigError, match="use 1-64 of a-z"):
        registry.job_type("Bad-Name", queue="database", payload=_Thing)
    with pytest.raises(ConfigError, match=r"payload must be a slimyq\.Payload subclass"):
        registry.job_type("thing", queue="database", payload=dict)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="not a field"):
        registry.job_type("thing", queue="database", payload=_Thing, positional="nope")
    with pytest.raises(ConfigError, match="declared twice"):
        registry.register(registry.JobType("canary", "*", "elsewhere.canary", _Thing))


def test_builtin_types_use_the_same_declaration() -> None:
    names = {jt.name for jt in registry.all_types()}
    assert {"create_conversation", "canary", "chat_bot_interaction", "log_event", "audit_report"} <= names
    modules = {jt.func_name.rpartition(".")[0] for jt in registry.all_types()}
    assert modules == set(registry.BUILTIN_MODULES)  # this process has no team modules


def test_builtin_handler_modules_import_no_peewee() -> None:
    code = ("import sys\nfrom slimyq.jobs import registry\nregistry.all_types()\n"
            "print(sorted(m for m in ('rq', 'peewee', 'openai') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
