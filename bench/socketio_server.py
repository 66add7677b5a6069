"""
The python-socketio comparison server for bench/run: an echo server on
python-socketio 5 and aiohttp, one process, run with bench/.venv (made by
bench/setup.sh from bench/requirements-socketio.txt), never with the
project's environment.

    bench/.venv/bin/python bench/socketio_server.py --port PORT [--host 127.0.0.1]

It serves WebSocket and long-polling on /socket.io/.  Every "echo" event is
acknowledged (the handler's return value is socket.io's acknowledgement) and
sent back as an "echo" event that asks the client for an acknowledgement in
turn, so that every message, each way, is acknowledged, as in txgateway's
session protocol.  Nothing is logged: no access log, no per-event log.

Prints "listening on PORT" once it accepts connections.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

import socketio
from aiohttp import web


def makeServer() -> tuple[socketio.AsyncServer, web.Application]:
    """
    @return: the socket.io server and the aiohttp application it is
        attached to.
    """
    sio = socketio.AsyncServer(
        async_mode="aiohttp",
        logger=False,
        engineio_logger=False,
        # The clients send small text messages: compression would only cost.
        http_compression=False,
        max_http_buffer_size=4 * 1024 * 1024,
    )
    app = web.Application()
    sio.attach(app)

    def acknowledged(*args) -> None:
        """
        The client acknowledged an echo.
        """

    @sio.on("echo")
    async def echo(sid, data):
        await sio.emit("echo", data, to=sid, callback=acknowledged)
        return True

    return sio, app


async def serve(host: str, port: int) -> None:
    """
    Listen on C{host}:C{port} until SIGTERM or SIGINT.
    """
    _, app = makeServer()
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=4096)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1]
    print(f"listening on {bound}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    options = parser.parse_args(argv)
    asyncio.run(serve(options.host, options.port))


if __name__ == "__main__":
    main(sys.argv[1:])
