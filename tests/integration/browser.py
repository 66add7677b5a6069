"""
Headless Chromium for the browser tests (C{test_browser}, C{test_demo}):
the page's server and the browser driving it (L{Browser}), the C{browser}
and C{make_nginx} fixtures (given to every test here by C{conftest.py}), and
what nginx's log says of WebSocket attempts.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path
from urllib.parse import urlencode

import pytest
import pytest_twisted
from twisted.internet.defer import DeferredQueue
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from gateway.testing import startProcess

T = 60.0
LOCALHOST = "127.0.0.1"
PAGE = Path(__file__).with_name("browser_page.html")

NGINX_CONF = """\
daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log stderr notice;
events {{}}
http {{
    log_format browser '$msec $request_method $uri txgw=$arg_txgw $status upgrade="$http_upgrade"';
    access_log /dev/stderr browser;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen {host}:{port};
        location / {{
            # No Upgrade or Connection headers are passed on: WebSocket
            # handshakes reach the gateway as plain GETs.
            proxy_pass http://{host}:{target};
            proxy_http_version 1.1;{extra}
        }}
    }}
}}
"""


def _binary(name: str, *paths: str) -> str:
    found = shutil.which(name) or next((p for p in paths if os.access(p, os.X_OK)), None)
    if found is None:
        pytest.fail(f"{name} is not installed: run `make test`, whose browser-deps step installs "
                    "it (apt-get install chromium chromium-driver nginx)")
    return found


def chromiumBinary() -> str:
    """
    @return: the path of Debian's C{chromium}.
    @raise pytest.fail.Exception: when it is missing (never a skip).
    """
    return _binary("chromium", "/usr/bin/chromium")


def nginxBinary() -> str:
    """
    @return: the path of C{nginx} (in /usr/sbin, which may not be on PATH).
    @raise pytest.fail.Exception: when it is missing (never a skip).
    """
    return _binary("nginx", "/usr/sbin/nginx")


def freePort() -> int:
    """
    @return: a port that was free a moment ago (for nginx, which cannot
        listen on port 0 and report the port; its start is retried).
    """
    with socket.socket() as s:
        s.bind((LOCALHOST, 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------
# What the page sends, and what it must receive.

class Report:
    """
    One report of the page (a JSON object with C{event}), whose answer is
    held until L{reply}.
    """

    def __init__(self, data: dict, request) -> None:
        self.data = data
        self._request = request
        self._replied = False

    @property
    def event(self) -> str:
        """
        The kind of report: open, progress, done or error.
        """
        return self.data.get("event", "")

    def reply(self, payload: dict | None = None) -> None:
        """
        Answer the page (it may be waiting for this answer).
        """
        if self._replied:
            return
        self._replied = True
        if getattr(self._request, "_gone", False):
            return
        self._request.setHeader(b"content-type", b"application/json")
        self._request.write(json.dumps(payload or {}).encode("utf-8"))
        self._request.finish()


class _PageResource(Resource):
    """
    GET /page.html: the test page; POST /report: a report, queued.
    """

    isLeaf = True

    def __init__(self, reports: DeferredQueue) -> None:
        super().__init__()
        self.reports = reports

    def render_GET(self, request):
        if request.path != b"/page.html":
            request.setResponseCode(404)
            return b"not found"
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        return PAGE.read_bytes()

    def render_POST(self, request):
        if request.path != b"/report":
            request.setResponseCode(404)
            return b"not found"
        report = Report(json.loads(request.content.read()), request)

        def gone(_):
            request._gone = True

        request.notifyFinish().addErrback(gone)
        self.reports.put(report)
        return NOT_DONE_YET


class Browser:
    """
    The page's server on 127.0.0.1 and a headless Chromium showing the page.

    @ivar origin: the page's origin (for the gateway's C{corsOrigins}).
    """

    def __init__(self, binary: str, directory: Path) -> None:
        self.binary = binary
        self.directory = directory
        self.reports: DeferredQueue = DeferredQueue()
        self.seen: list[dict] = []
        self.processes: list = []
        self._listening = None
        self.origin = ""

    async def start(self) -> None:
        """
        Listen on a free port.
        """
        from twisted.internet import reactor
        from twisted.internet.endpoints import TCP4ServerEndpoint

        site = Site(_PageResource(self.reports))
        site.noisy = False
        self._listening = await TCP4ServerEndpoint(reactor, 0, interface=LOCALHOST).listen(site)
        self.origin = f"http://{LOCALHOST}:{self._listening.getHost().port}"

    async def open(self, page: str | None = None, **params) -> None:
        """
        Start Chromium on the page with the query C{params} (see
        browser_page.html), or on the URL C{page}.
        """
        profile = self.directory / f"chromium-{len(self.processes)}"
        profile.mkdir()
        env = dict(os.environ, HOME=str(profile), XDG_CONFIG_HOME=str(profile / "config"),
                   XDG_CACHE_HOME=str(profile / "cache"))
        args = [
            self.binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-proxy-server",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--disable-background-timer-throttling",
            "--disable-renderer-backgrounding",
            "--enable-logging=stderr",
            f"--user-data-dir={profile}",
            "--remote-debugging-port=0",
            page or f"{self.origin}/page.html?{urlencode(params)}",
        ]
        process = await startProcess(args, r"DevTools listening on ws://", env=env, timeout=T)
        self.processes.append(process)

    async def expect(self, *events: str, reply: bool = True, timeout: float = T) -> Report:
        """
        @return: the page's next report of one of C{events} (other reports
            are answered and kept in C{seen}), answered unless C{reply} is
            false.
        @raise AssertionError: when the page reports an error, or nothing
            comes within C{timeout} seconds.
        """
        from twisted.internet import reactor

        while True:
            try:
                report = await self.reports.get().addTimeout(timeout, reactor)
            except Exception:
                raise AssertionError(
                    f"no {'/'.join(events)} report from the page within {timeout} s\n"
                    + self.diagnostics()) from None
            self.seen.append(report.data)
            if report.event == "error":
                report.reply()
                raise AssertionError(f"the page failed: {report.data.get('message')}\n"
                                     f"{report.data.get('stack')}\n" + self.diagnostics())
            if report.event in events:
                if reply:
                    report.reply()
                return report
            report.reply()

    def diagnostics(self) -> str:
        """
        What the page reported and the browser printed, for a failure
        message.
        """
        lines = [f"reports: {json.dumps(self.seen)[-3000:]}"]
        for process in self.processes:
            lines.append("chromium output (tail):\n" + "\n".join(process.protocol.lines[-40:]))
        return "\n".join(lines)

    async def stop(self) -> None:
        """
        Stop every Chromium (TERM, then KILL) and the server.
        """
        for process in self.processes:
            process.signal("TERM")
            try:
                await process.wait(10)
            except Exception:
                process.signal("KILL")
                try:
                    await process.wait(10)
                except Exception:
                    pass
        if self._listening is not None:
            await self._listening.stopListening()


@pytest_twisted.async_yield_fixture
async def browser(tmp_path):
    """
    A L{Browser}: the page's server is listening (its C{origin} is known);
    C{await browser.open(...)} starts Chromium.  Everything is stopped at
    the end of the test.
    """
    running = Browser(chromiumBinary(), tmp_path)
    await running.start()
    yield running
    await running.stop()


@pytest_twisted.async_yield_fixture
async def make_nginx(tmp_path):
    """
    C{await make_nginx(targetPort)}: a real nginx on a free port of
    127.0.0.1 proxying to C{targetPort} without passing Upgrade or
    Connection headers (so that WebSocket handshakes fail), logging each
    request on its output; with C{passHost=True} it passes the browser's
    C{Host} on.

    @return: (from the call) the running process and its port.
    """
    binary = nginxBinary()
    started = []

    async def start(targetPort: int, attempts: int = 10, passHost: bool = False):
        failures = []
        for attempt in range(attempts):
            port = freePort()
            directory = tmp_path / f"nginx-{len(started)}-{attempt}"
            directory.mkdir()
            config = directory / "nginx.conf"
            # With passHost, the browser's Host is passed on (as a site
            # serving its own page through nginx does), so that the gateway
            # sees the page's origin as its own.
            extra = "\n            proxy_set_header Host $http_host;" if passHost else ""
            config.write_text(NGINX_CONF.format(dir=directory, host=LOCALHOST, port=port,
                                                target=targetPort, extra=extra))
            try:
                # Written once the listening socket is bound.
                process = await startProcess(
                    [binary, "-p", str(directory), "-c", str(config), "-e", "stderr"],
                    r"getrlimit\(RLIMIT_NOFILE\)", timeout=T)
            except RuntimeError as e:  # exited: most likely the port was taken meanwhile
                failures.append(str(e))
                continue
            started.append(process)
            return process, port
        raise RuntimeError(f"nginx did not start in {attempts} attempts:\n" + "\n".join(failures))

    yield start
    for process in started:
        process.signal("TERM")
        try:
            await process.wait(10)
        except Exception:
            process.signal("KILL")


def webSocketAttempts(log: str) -> list[float]:
    """
    @return: when (nginx's C{$msec}) each WebSocket handshake reached nginx,
        which passed it on as the plain GET the gateway answers with 426.
    """
    return [float(line.split()[0]) for line in log.splitlines()
            if 'GET /echo txgw=- 426 upgrade="websocket"' in line]
