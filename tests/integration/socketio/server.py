"""
A python-socketio server (aiohttp) for the Socket.IO conformance tests, run
as its own process:

    python server.py [--path /socket.io/]

Listens on a free port of 127.0.0.1 and prints "listening on PORT".  On the
default namespace:

 - "echo": the data back as an "echo" event, and the data as the ack;
 - "binary": bytes back (with the length of those received as the ack);
 - "ask": the server emits "question" with an ack callback; the client's
   answer is sent back as an "answer" event;
 - "whoami": the ack is the handshake's query, cookie, Authorization and
   forwarding headers, so that the test sees what reached the server;
 - "bye": the server disconnects the client.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import socketio
from aiohttp import web


def build(path: str) -> web.Application:
    """
    @return: the application with the server attached at C{path}.
    """
    sio = socketio.AsyncServer(async_mode="aiohttp", logger=False, engineio_logger=False,
                               cors_allowed_origins=[])
    app = web.Application()
    sio.attach(app, socketio_path=path)
    environs: dict[str, dict] = {}

    @sio.event
    async def connect(sid, environ, auth):
        environs[sid] = {
            "query": environ.get("QUERY_STRING", ""),
            "cookie": environ.get("HTTP_COOKIE"),
            "authorization": environ.get("HTTP_AUTHORIZATION"),
            "forwarded_for": environ.get("HTTP_X_FORWARDED_FOR"),
            "forwarded": environ.get("HTTP_FORWARDED"),
            "auth": auth,
        }

    @sio.event
    async def disconnect(sid, *args):
        environs.pop(sid, None)

    @sio.on("echo")
    async def echo(sid, data):
        await sio.emit("echo", data, to=sid)
        return data

    @sio.on("binary")
    async def binary(sid, data):
        await sio.emit("binary", {"blob": bytes(reversed(data["blob"])), "n": len(data["blob"])}, to=sid)
        return len(data["blob"])

    @sio.on("ask")
    async def ask(sid, data):
        answer = await sio.call("question", data, to=sid, timeout=10)
        await sio.emit("answer", answer, to=sid)

    @sio.on("whoami")
    async def whoami(sid):
        return environs.get(sid)

    @sio.on("bye")
    async def bye(sid):
        await sio.disconnect(sid)

    return app


async def serve(path: str) -> None:
    """
    Serve until SIGTERM or SIGINT.
    """
    runner = web.AppRunner(build(path), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    print(f"listening on {port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--path", default="/socket.io/")
    asyncio.run(serve(parser.parse_args().path))
