"""
The seed set-up's backend: a Python ``websockets`` echo server that replies
"Echo: <message>".  Run as a separate process by the tests; it listens on
127.0.0.1 on a free port and prints ``listening on PORT``.
"""

import asyncio
import sys

from websockets.asyncio.server import serve


async def echo(websocket):
    """
    Reply to every message with "Echo: " and the message.
    """
    async for message in websocket:
        await websocket.send(f"Echo: {message}")


async def main():
    """
    Serve until killed.
    """
    async with serve(echo, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        print(f"listening on {port}", flush=True)
        await asyncio.get_running_loop().create_future()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
