"""
A headless Chromium driven through the Chrome DevTools protocol, for tests
and scripts that look at a page the gateway serves (the status page): open
a URL, run JavaScript in the page, wait for a condition in its DOM, type,
take a screenshot.

Chromium is Debian's (C{apt-get install chromium}, which C{make test}
runs); nothing downloads a browser of its own.  The protocol is spoken over
the browser's own WebSocket (C{--remote-debugging-port=0}, whose address
Chromium prints when it is ready) with Autobahn's Twisted client, in
flattened sessions (one connection, C{sessionId} on each command), so that
nothing blocks the reactor and nothing but Autobahn is needed.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet.defer import Deferred

from ._processes import RunningProcess, startProcess

__all__ = ["Chromium", "DevToolsError", "chromiumBinary"]

#: Seconds a DevTools command may take.
COMMAND_TIMEOUT = 30.0
#: The largest DevTools message read (a screenshot comes as one).
MAX_MESSAGE = 64 * 1024 * 1024


#: The page's messages kept (L{Chromium.messages}) at most.
MAX_KEPT = 500

#: The events whose messages are kept: the browser's log (a request the
#: Content-Security-Policy refused is logged there), the console, and
#: exceptions nothing caught.
_MESSAGES = ("Log.entryAdded", "Runtime.consoleAPICalled", "Runtime.exceptionThrown")


def _describe(method: str, params: dict) -> dict[str, Any]:
    """
    @return: C{level}, C{source} and C{text} of a log entry, a console call
        or an exception.
    """
    if method == "Log.entryAdded":
        entry = params.get("entry", {})
        return {"level": entry.get("level"), "source": entry.get("source"), "text": entry.get("text")}
    if method == "Runtime.consoleAPICalled":
        words = [str(a.get("value", a.get("description", ""))) for a in params.get("args", [])]
        return {"level": params.get("type"), "source": "console", "text": " ".join(words)}
    details = params.get("exceptionDetails", {})
    text = details.get("exception", {}).get("description") or details.get("text")
    return {"level": "error", "source": "exception", "text": text}


class DevToolsError(Exception):
    """
    A DevTools command failed, or JavaScript evaluated in the page threw.
    """


def chromiumBinary() -> str | None:
    """
    @return: the path of Debian's C{chromium}, or L{None} when it is not
        installed.
    """
    found = shutil.which("chromium")
    if found is None and os.access("/usr/bin/chromium", os.X_OK):
        found = "/usr/bin/chromium"
    return found


class _DevToolsProtocol(WebSocketClientProtocol):
    """
    Commands out, answers matched to them by id; events are not kept.
    """

    def onOpen(self) -> None:
        self.factory.owner._opened(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.factory.owner._received(json.loads(payload))

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.factory.owner._closed(reason or f"closed ({code})")


class Chromium:
    """
    One headless Chromium process and one page in it.

    @ivar process: the running browser (its output in C{process.output}).
    @ivar messages: what the page logged, printed and threw.
    """

    def __init__(self, binary: str, profile: Path, *, width: int = 1280, height: int = 900,
                 reactor: Any = None) -> None:
        """
        @param binary: the C{chromium} to run.
        @param profile: an empty directory for the browser's profile.
        @param width: the window's width (and the screenshots'), in pixels.
        @param height: its height.
        """
        if reactor is None:
            from twisted.internet import reactor
        self.binary = binary
        self.profile = profile
        self.width = width
        self.height = height
        self.reactor = reactor
        self.process: RunningProcess | None = None
        self._protocol: _DevToolsProtocol | None = None
        self._connected: Deferred | None = None
        self._pending: dict[int, Deferred] = {}
        self._events: dict[str, list[Deferred]] = {}
        #: What the page logged, printed and threw (L{_describe}), the
        #: first L{MAX_KEPT}.
        self.messages: list[dict[str, Any]] = []
        self._next = 0
        self._session: str | None = None

    async def start(self, url: str = "about:blank", timeout: float = 60.0) -> None:
        """
        Start the browser, attach to its page and load C{url} there.
        """
        self.profile.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, HOME=str(self.profile), XDG_CONFIG_HOME=str(self.profile / "config"),
                   XDG_CACHE_HOME=str(self.profile / "cache"))
        args = [
            self.binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--disable-quic", "--no-proxy-server", "--no-first-run", "--no-default-browser-check",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-extensions", "--disable-background-timer-throttling",
            "--disable-renderer-backgrounding", "--hide-scrollbars", "--enable-logging=stderr",
            f"--window-size={self.width},{self.height}", f"--user-data-dir={self.profile}",
            "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1",
        ]
        self.process = await startProcess(args + ["about:blank"], r"DevTools listening on (ws://\S+)", env=env,
                                          timeout=timeout)
        address = self.process.match.group(1)
        parsed = urlparse(address)
        factory = WebSocketClientFactory(address)
        factory.protocol = _DevToolsProtocol
        factory.owner = self
        factory.setProtocolOptions(maxMessagePayloadSize=MAX_MESSAGE, maxFramePayloadSize=MAX_MESSAGE)
        self._connected = Deferred()
        from twisted.internet.endpoints import TCP4ClientEndpoint

        await TCP4ClientEndpoint(self.reactor, parsed.hostname, parsed.port, timeout=timeout).connect(factory)
        await self._connected.addTimeout(timeout, self.reactor)
        targets = await self.command("Target.getTargets")
        pages = [t for t in targets["targetInfos"] if t["type"] == "page"]
        if not pages:
            raise DevToolsError("the browser has no page")
        attached = await self.command("Target.attachToTarget", targetId=pages[0]["targetId"], flatten=True)
        self._session = attached["sessionId"]
        await self.command("Page.enable")
        await self.command("Runtime.enable")
        await self.command("Log.enable")
        if url != "about:blank":
            await self.navigate(url)

    # The protocol's connection.
    def _opened(self, protocol: _DevToolsProtocol) -> None:
        self._protocol = protocol
        if self._connected is not None and not self._connected.called:
            self._connected.callback(None)

    def _received(self, message: dict) -> None:
        if "id" not in message:
            method = message.get("method")
            if method in _MESSAGES and len(self.messages) < MAX_KEPT:
                self.messages.append(_describe(method, message.get("params", {})))
            for waiting in self._events.pop(method, []):
                waiting.callback(message.get("params", {}))
            return
        waiting = self._pending.pop(message["id"], None)
        if waiting is None:
            return
        if "error" in message:
            waiting.errback(DevToolsError(f"{message['error'].get('message')}"))
        else:
            waiting.callback(message.get("result", {}))

    def _closed(self, reason: str) -> None:
        self._protocol = None
        pending, self._pending = self._pending, {}
        for waiting in pending.values():
            waiting.errback(DevToolsError(f"the DevTools connection ended: {reason}"))

    def command(self, method: str, wait: float = COMMAND_TIMEOUT, **params: Any) -> Deferred:
        """
        Send one DevTools command (to the page, once attached).

        @param wait: seconds to wait for its answer.
        @return: L{Deferred} firing with its result.
        """
        if self._protocol is None:
            raise DevToolsError("not connected to the browser")
        self._next += 1
        message: dict[str, Any] = {"id": self._next, "method": method, "params": params}
        if self._session is not None:
            message["sessionId"] = self._session
        waiting: Deferred = Deferred()
        self._pending[self._next] = waiting
        self._protocol.sendMessage(json.dumps(message).encode("utf-8"))
        return waiting.addTimeout(wait, self.reactor)

    async def evaluate(self, expression: str, timeout: float = COMMAND_TIMEOUT) -> Any:
        """
        @return: the value of JavaScript C{expression} in the page (a
            promise is awaited), as JSON.
        @raise DevToolsError: when it throws.
        """
        result = await self.command("Runtime.evaluate", wait=timeout + 5, expression=expression,
                                    awaitPromise=True, returnByValue=True, timeout=timeout * 1000)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise DevToolsError(f"the page threw: {text}")
        return result["result"].get("value")

    async def waitFor(self, condition: str, timeout: float = 30.0) -> Any:
        """
        Wait for JavaScript C{condition} to be truthy in the page, checked
        each time the DOM changes (a C{MutationObserver}): no polling.

        @return: its value.
        @raise DevToolsError: when it is still falsy after C{timeout}
            seconds (with C{document.body.innerText} for a diagnosis).
        """
        script = """new Promise((resolve) => {
            const check = () => { try { return (%s); } catch (e) { return false; } };
            const first = check();
            if (first) { resolve(first); return; }
            const observer = new MutationObserver(() => {
                const value = check();
                if (value) { observer.disconnect(); clearTimeout(timer); resolve(value); }
            });
            observer.observe(document, {subtree: true, childList: true, characterData: true,
                                        attributes: true});
            const timer = setTimeout(() => { observer.disconnect();
                resolve({__timeout: true, text: document.body ? document.body.innerText : ""}); },
                %d);
        })""" % (condition, int(timeout * 1000))
        value = await self.evaluate(script, timeout=timeout + 5)
        if isinstance(value, dict) and value.get("__timeout"):
            raise DevToolsError(f"still false after {timeout} s: {condition}\npage text:\n"
                                f"{value.get('text', '')[-3000:]}")
        return value

    def event(self, method: str, timeout: float = COMMAND_TIMEOUT) -> Deferred:
        """
        @return: L{Deferred} firing with the parameters of the next event
            C{method} (C{"Page.loadEventFired"}).
        """
        waiting: Deferred = Deferred()
        self._events.setdefault(method, []).append(waiting)
        return waiting.addTimeout(timeout, self.reactor)

    async def navigate(self, url: str, timeout: float = COMMAND_TIMEOUT) -> None:
        """
        Load C{url} in the page, and wait for its C{load} event.
        """
        loaded = self.event("Page.loadEventFired", timeout)
        answer = await self.command("Page.navigate", url=url)
        if answer.get("errorText"):
            raise DevToolsError(f"cannot load {url}: {answer['errorText']}")
        await loaded

    async def type(self, text: str) -> None:
        """
        Type C{text} into the element that has the focus, as keyboard input.
        """
        await self.command("Input.insertText", text=text)

    async def press(self, key: str = "Enter") -> None:
        """
        Press and release C{key} (C{"Enter"}) on the element that has the
        focus.
        """
        codes = {"Enter": 13}
        for kind in ("keyDown", "keyUp"):
            await self.command("Input.dispatchKeyEvent", type=kind, key=key, code=key,
                               windowsVirtualKeyCode=codes.get(key, 0),
                               text="\r" if key == "Enter" and kind == "keyDown" else "")

    async def screenshot(self, path: Path) -> None:
        """
        Write a PNG of the whole page (not only the window) to C{path}.
        """
        metrics = await self.command("Page.getLayoutMetrics")
        size = metrics.get("cssContentSize") or metrics["contentSize"]
        result = await self.command("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                                    clip={"x": 0, "y": 0, "width": self.width,
                                          "height": max(self.height, int(size["height"])), "scale": 1})
        path.write_bytes(base64.b64decode(result["data"]))

    async def stop(self) -> None:
        """
        Close the connection and stop the browser (TERM, then KILL).
        """
        if self._protocol is not None:
            self._protocol.transport.abortConnection()
        process, self.process = self.process, None
        if process is None:
            return
        process.signal("TERM")
        try:
            await process.wait(10)
        except Exception:
            process.signal("KILL")
            try:
                await process.wait(10)
            except Exception:
                pass
