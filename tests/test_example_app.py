"""examples/chat_api.py under a real server (uvicorn, loopback) with a real HTTP client (httpx),
and a real worker: the original API's routes, built on slimyq.AsyncClient."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from clientkit import burst, environ, write_config

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def api(redis_url: str, isolated_env: Path) -> Iterator[httpx.Client]:
    write_config(Path.cwd())
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--app-dir", str(EXAMPLES), "--host", "127.0.0.1", "--port", str(port),
         "--log-level", "warning", "chat_api:app"],
        env=environ(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            deadline = time.monotonic() + 30
            while True:
                try:
                    http.get("/")
                    break
                except httpx.TransportError:
                    if server.poll() is not None or time.monotonic() > deadline:
                        log = server.stderr.read() if server.stderr else ""
                        raise RuntimeError(f"uvicorn did not start: {log}") from None
                    time.sleep(0.1)
            yield http
    finally:
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)


def _poll(http: httpx.Client, job_id: str, user: str) -> httpx.Response:
    return http.get(f"/api/chat/db-jobs/{job_id}", headers={"X-User-Id": user})


def test_conversation_message_and_job_polling(api: httpx.Client) -> None:
    alice = {"X-User-Id": "alice"}
    created = api.post("/api/chat/conversations", json={"title": "Hi"}, headers=alice)
    assert created.status_code == 202
    body = created.json()
    assert body["ok"] is True and body["status"] == "queued"
    queued = _poll(api, body["jobId"], "alice").json()
    assert queued["status"] == "queued" and queued["type"] == "create_conversation"

    burst("database")
    done = _poll(api, body["jobId"], "alice").json()
    assert done["status"] == "finished" and done["result"]["success"] is True
    conversation = done["result"]["conversationId"]

    # ownership: another user's job reads exactly like a missing one
    other, missing = _poll(api, body["jobId"], "bob"), _poll(api, "no-such-job", "bob")
    assert other.status_code == missing.status_code == 404
    assert other.json() == missing.json() == {"ok": False, "error": "Job not found"}

    saved = api.post(f"/api/chat/conversations/{conversation}/messages", json={"content": "hello"}, headers=alice)
    assert saved.status_code == 202
    burst("database")
    message = _poll(api, saved.json()["jobId"], "alice").json()
    assert message["status"] == "finished" and message["result"]["success"] is True

    # bob saving into alice's conversation: the job fails with the contract's message, visible to bob only
    foreign = api.post(f"/api/chat/conversations/{conversation}/messages", json={"content": "x"},
                       headers={"X-User-Id": "bob"})
    burst("database")
    failed = _poll(api, foreign.json()["jobId"], "bob").json()
    assert failed["status"] == "failed" and "Conversation not found or access denied" in failed["error"]


def test_bad_requests(api: httpx.Client) -> None:
    alice = {"X-User-Id": "alice"}
    invalid = api.post("/api/chat/conversations", json={"title": "x" * 201, "personalityMode": "grumpy"},
                       headers=alice)
    assert invalid.status_code == 400
    assert {e["field"] for e in invalid.json()["errors"]} == {"title", "personalityMode"}
    bad_id = api.post("/api/chat/conversations/not-a-uuid/messages", json={"content": "x"}, headers=alice)
    assert bad_id.status_code == 400 and bad_id.json()["errors"][0]["field"] == "conversationId"
    assert api.post("/api/chat/conversations", json={}).status_code == 401
    assert api.post("/api/chat/conversations", content=b"{nope", headers=alice).status_code == 400
    assert api.get("/api/elsewhere", headers=alice).status_code == 404
