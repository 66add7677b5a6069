"""
A python-socketio client for the Socket.IO conformance tests, run as its own
process against a gateway:

    python client.py URL TRANSPORTS [PATH]

TRANSPORTS is "polling", "websocket" or "polling,websocket" (polling, then
the upgrade).  It exercises text events, binary attachments and
acknowledgements both ways, prints one JSON line with what it saw, and
exits 0; any failure exits non-zero with the error on stderr.
"""

from __future__ import annotations

import json
import sys
import threading

import socketio


def main(url: str, transports: list[str], path: str) -> dict:
    """
    @return: what the client saw, for the test to check.
    """
    client = socketio.Client(reconnection=False)
    events: dict[str, list] = {"echo": [], "binary": [], "answer": []}
    arrived = {name: threading.Event() for name in events}
    disconnected = threading.Event()

    for name in events:
        def on(data, name=name):
            events[name].append(data)
            arrived[name].set()
        client.on(name, on)

    @client.on("question")
    def question(data):
        return {"answer": data["q"] * 2}

    @client.event
    def disconnect(*args):
        disconnected.set()

    client.connect(url, transports=transports, socketio_path=path,
                   headers={"Cookie": "flavour=oatmeal", "Authorization": "Bearer t0ken"},
                   auth={"token": "abc"}, wait_timeout=10)
    seen: dict = {"sid": client.sid is not None}
    seen["echoAck"] = client.call("echo", {"text": "héllo", "n": [1, 2, 3]}, timeout=10)
    assert arrived["echo"].wait(10), "no echo event"
    seen["echo"] = events["echo"][0]
    blob = bytes(range(256)) * 40
    seen["binaryAck"] = client.call("binary", {"blob": blob}, timeout=10)
    assert arrived["binary"].wait(10), "no binary event"
    back = events["binary"][0]
    seen["binaryOk"] = back["blob"] == bytes(reversed(blob)) and back["n"] == len(blob)
    client.emit("ask", {"q": 21})
    assert arrived["answer"].wait(10), "no answer event"
    seen["answer"] = events["answer"][0]
    many = [client.call("echo", i, timeout=10) for i in range(50)]
    seen["ordered"] = many == list(range(50))
    seen["whoami"] = client.call("whoami", timeout=10)
    seen["transport"] = client.transport()
    client.emit("bye")
    seen["serverDisconnected"] = disconnected.wait(10)
    client.disconnect()
    return seen


if __name__ == "__main__":
    url, transports = sys.argv[1], sys.argv[2].split(",")
    path = sys.argv[3] if len(sys.argv) > 3 else "socket.io"
    print(json.dumps(main(url, transports, path)), flush=True)
