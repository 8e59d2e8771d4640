"""An ASGI application with the routes of the admin API slimyq replaces, on slimyq.AsyncClient.

    POST /api/chat/conversations                    {"title"?, "personalityMode"?}   -> 202 {ok, jobId, status}
    POST /api/chat/conversations/{id}/messages      {"content", "role"?}             -> 202 {ok, jobId, status}
    GET  /api/chat/db-jobs/{jobId}                  -> 200 {ok, jobId, status, result, error, ...}
                                                       404 for a missing job AND for another user's

The user is the ``X-User-Id`` header here; put your authentication in ``user_of``. Run it with
any ASGI server, e.g. ``uvicorn --app-dir examples chat_api:app`` (settings as for the CLI:
``REDIS_URL``, ``./slimyq.toml`` ...), and a worker: ``slimyq worker database``.

No framework, to show only what slimyq needs: one AsyncClient for the process (opened at startup,
closed at shutdown), and its exceptions mapped to HTTP statuses.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from slimyq import AsyncClient, RateLimited, SlimyqError, Unreachable, ValidationError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

MESSAGES = re.compile(r"^/api/chat/conversations/([^/]+)/messages$")
JOB = re.compile(r"^/api/chat/db-jobs/([^/]+)$")
MAX_BODY = 64 * 1024

client: AsyncClient | None = None


class HTTPError(Exception):
    def __init__(self, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]] | None = None) -> None:
        super().__init__(body.get("error", ""))
        self.status, self.body, self.headers = status, body, headers or []


def user_of(scope: Scope) -> str:
    """The authenticated user (here: the X-User-Id header; use your session or token check)."""
    for name, value in scope.get("headers", []):
        if name == b"x-user-id" and value.strip():
            return str(value.decode().strip())
    raise HTTPError(401, {"ok": False, "error": "Authentication required"})


async def create_conversation(user: str, body: dict[str, Any]) -> dict[str, Any]:
    payload = {**_fields(body, "title", "personalityMode"), "userId": user}
    job = await _client().enqueue("create_conversation", payload)
    return {"ok": True, "jobId": job.id, "status": job.status}


async def save_message(user: str, conversation_id: str, body: dict[str, Any]) -> dict[str, Any]:
    payload = {**_fields(body, "content", "personalityMode"), "role": body.get("role", "user"),
               "conversationId": conversation_id, "userId": user}
    job = await _client().enqueue("save_message", payload)
    return {"ok": True, "jobId": job.id, "status": job.status}


async def job_status(user: str, job_id: str) -> dict[str, Any]:
    info = await _client().job(job_id, user=user)
    if info is None:  # missing, or another user's: the same answer
        raise HTTPError(404, {"ok": False, "error": "Job not found"})
    return {
        "ok": True,
        "jobId": info.id,
        "type": info.type,
        "status": info.status,
        "result": info.result,
        "error": info.error,
        "attempts": len(info.attempts),
        "createdAt": info.created_at.isoformat() if info.created_at else None,
        "endedAt": info.ended_at.isoformat() if info.ended_at else None,
    }


def _fields(body: dict[str, Any], *names: str) -> dict[str, Any]:
    return {name: body[name] for name in names if name in body}


def _client() -> AsyncClient:
    if client is None:
        raise RuntimeError("the app was not started (ASGI lifespan)")
    return client


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["type"] != "http":
        return
    try:
        status, body, headers = 200, await _route(scope, receive), []
        if scope["method"] == "POST":
            status = 202
    except HTTPError as exc:
        status, body, headers = exc.status, exc.body, exc.headers
    except ValidationError as exc:
        status, body, headers = 400, {"ok": False, "error": "Invalid request", "errors": exc.errors}, []
    except RateLimited as exc:
        status, headers = 429, [(b"retry-after", str(exc.retry_after).encode())]
        body = {"ok": False, "error": f"Too many requests, retry in {exc.retry_after} s"}
    except Unreachable:
        status, body, headers = 503, {"ok": False, "error": "Queue unavailable"}, []
    except SlimyqError as exc:
        status, body, headers = 500, {"ok": False, "error": str(exc)}, []
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": data})


async def _route(scope: Scope, receive: Receive) -> dict[str, Any]:
    method, path = scope["method"], scope["path"]
    if method == "POST" and path == "/api/chat/conversations":
        return await create_conversation(user_of(scope), await _json(receive))
    if method == "POST" and (found := MESSAGES.match(path)):
        return await save_message(user_of(scope), found.group(1), await _json(receive))
    if method == "GET" and (found := JOB.match(path)):
        return await job_status(user_of(scope), found.group(1))
    raise HTTPError(404, {"ok": False, "error": "Not found"})


async def _json(receive: Receive) -> dict[str, Any]:
    chunks, size, more = [], 0, True
    while more:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            raise HTTPError(413, {"ok": False, "error": "Request body too large"})
        chunks.append(chunk)
        more = message.get("more_body", False)
    try:
        body = json.loads(b"".join(chunks) or b"{}")
    except ValueError:
        raise HTTPError(400, {"ok": False, "error": "Request body must be JSON"}) from None
    if not isinstance(body, dict):
        raise HTTPError(400, {"ok": False, "error": "Request body must be a JSON object"})
    return body


async def _lifespan(receive: Receive, send: Send) -> None:
    global client
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            try:
                client = AsyncClient()
                await client.redis()  # fail the startup now if Redis is unreachable
            except SlimyqError as exc:
                await send({"type": "lifespan.startup.failed", "message": str(exc)})
                return
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            if client is not None:
                await client.aclose()
                client = None
            await send({"type": "lifespan.shutdown.complete"})
            return
