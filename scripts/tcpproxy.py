#!/usr/bin/env python
"""A small TCP forwarder that can add latency: the multi-host harness's way to reach the loopback-only
PostgreSQL from network namespaces, and to put a few milliseconds between a host and Redis (this
kernel has no netem qdisc).

    python scripts/tcpproxy.py LISTEN_HOST:PORT TARGET_HOST:PORT [--delay-ms D] [--tag TAG]

Every chunk the client sends reaches the target ``D`` ms after it arrived (in order), so each
request/reply round trip is ``D`` ms longer; replies are not delayed. Prints ``ready`` on stdout
once listening. ``--tag`` only marks the command line (the harness finds its leftovers by it).
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
from collections import deque


def _split(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host, int(port)


def _nodelay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


async def _copy_delayed(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    loop = asyncio.get_running_loop()
    pending: deque[tuple[float, bytes]] = deque()
    ready = asyncio.Event()

    async def send() -> None:
        while True:
            await ready.wait()
            due, data = pending.popleft()
            if not pending:
                ready.clear()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                writer.close()
                return
            writer.write(data)
            await writer.drain()

    sender = asyncio.create_task(send())
    try:
        while True:
            data = await reader.read(65536)
            pending.append((loop.time() + delay, data))
            ready.set()
            if not data:
                break
        await sender
    finally:
        sender.cancel()
        writer.close()


async def main(listen: str, target: str, delay_ms: float) -> None:
    thost, tport = _split(target)
    delay = delay_ms / 1000.0

    async def handle(creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        try:
            sreader, swriter = await asyncio.open_connection(thost, tport)
        except OSError:
            cwriter.close()
            return
        _nodelay(cwriter)
        _nodelay(swriter)
        up = _copy_delayed(creader, swriter, delay) if delay > 0 else _copy(creader, swriter)
        tasks = [asyncio.create_task(up), asyncio.create_task(_copy(sreader, cwriter))]
        _done, rest = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        await asyncio.gather(*rest, return_exceptions=True)
        for t in tasks:
            if t.done() and not t.cancelled():
                t.exception()  # retrieved: a reset connection is routine here
        swriter.close()
        cwriter.close()

    lhost, lport = _split(listen)
    server = await asyncio.start_server(handle, lhost, lport, reuse_address=True, backlog=1024)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("listen")
    parser.add_argument("target")
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("--tag", default="")
    ns = parser.parse_args()
    try:
        asyncio.run(main(ns.listen, ns.target, ns.delay_ms))
    except KeyboardInterrupt:
        sys.exit(0)
