"""
txgateway side by side with nginx, HAProxy and python-socketio.

Run it with C{bench/run}, which sets up what it needs first.  One echo
backend (C{bench/echo_server.mjs}) serves every proxied configuration in the
same run: the client straight to the backend ("direct"), nginx, HAProxy and
C{twistd -n gateway} in transparent mode, each a WebSocket proxy on
127.0.0.1 in front of that backend; and the same gateway in session mode,
with clients speaking the session protocol (txgateway.v1) over WebSocket and
over long-polling, every message acknowledged.  python-socketio 5 on aiohttp
(C{bench/socketio_server.py}, an echo server of its own, from C{bench/.venv})
is measured with the same workloads, over WebSocket and over polling.

The load generators (C{bench/load.mjs} for plain WebSocket,
C{bench/session_load.mjs} for txgateway.v1 and socket.io) run each workload
against each configuration, C{--runs} times, the runs of the configurations
interleaved:

  - throughput: N connections, W 64-byte text messages in flight on each;
  - latency: a fixed rate of messages over N connections, p50/p90/p99/max;
  - connection set-up: C connects (and closes), K at a time;
  - idle memory: C connections (or sessions) held open, RSS per connection
    of the server's process(es), over an idle baseline, each run on freshly
    started processes;
  - detached sessions: C sessions opened, then their client connections
    dropped, RSS per detached session (session mode only).

CPU placement (C{taskset}): the server under test alone on CPU 0, the load
generator and the echo backend on CPU 1 (C{--placement shared} moves the
backend to CPU 0).  The CPU time of every process is read from /proc at the
edges of each measured window, so the table also gives each server's rate
per core it used.

Prints one table and writes it, with the machine's facts, to
C{bench/results.md}.  Nothing is asserted: these are figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
CLK_TCK = os.sysconf("SC_CLK_TCK")
PROXY_CPU = "0"
LOAD_CPU = "1"
CONFIGS = ("direct", "nginx", "HAProxy", "txgateway", "session WS", "session polling",
           "socket.io WS", "socket.io polling", "socket.io node WS", "socket.io node polling",
           "socket.io via txgateway", "socket.io via txgateway polling")
#: The table's column headings.
HEADINGS = {"session WS": "txgateway session, WebSocket",
            "session polling": "txgateway session, long-polling",
            "socket.io WS": "python-socketio, WebSocket",
            "socket.io polling": "python-socketio, polling",
            "socket.io node WS": "Node Socket.IO, WebSocket",
            "socket.io node polling": "Node Socket.IO, polling",
            "socket.io via txgateway": "Node Socket.IO via txgateway, WebSocket",
            "socket.io via txgateway polling": "Node Socket.IO via txgateway, polling"}
REFERENCE = "HAProxy"
#: Which server each configuration's clients connect to.
SERVER_OF = {"direct": "echo", "nginx": "nginx", "HAProxy": "HAProxy", "txgateway": "txgateway",
             "session WS": "session", "session polling": "session",
             "socket.io WS": "socketio", "socket.io polling": "socketio",
             "socket.io node WS": "socketio-node", "socket.io node polling": "socketio-node",
             "socket.io via txgateway": "socketio-gateway",
             "socket.io via txgateway polling": "socketio-gateway"}
#: bench/session_load.mjs's client and transport for the session configurations.
SESSION_CLIENTS = {"session WS": ("txgw", "websocket"), "session polling": ("txgw", "polling"),
                   "socket.io WS": ("socketio", "websocket"),
                   "socket.io polling": ("socketio", "polling"),
                   "socket.io node WS": ("socketio", "websocket"),
                   "socket.io node polling": ("socketio", "polling"),
                   "socket.io via txgateway": ("socketio", "websocket"),
                   "socket.io via txgateway polling": ("socketio", "polling")}
#: The python-socketio configuration each session configuration is held against.
SOCKETIO_OF = {"session WS": "socket.io WS", "session polling": "socket.io polling"}
#: The Node Socket.IO configuration each session configuration is held against.
NODE_SOCKETIO_OF = {"session WS": "socket.io node WS", "session polling": "socket.io node polling",
                    "socket.io via txgateway": "socket.io node WS",
                    "socket.io via txgateway polling": "socket.io node polling"}
ON_CPU0 = {"split": "the server under test alone", "shared": "the server under test and the echo backend"}
ON_CPU1 = {"split": "load generator and echo backend", "shared": "the load generator alone"}


# --- /proc -----------------------------------------------------------------

def cpuTicks(pid: int) -> int:
    """
    User plus system CPU time of a process, in clock ticks (0 once it is gone).
    """
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])


def rssKiB(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def childrenOf(pid: int) -> list[int]:
    found = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                found.extend(int(p) for p in f.read().split())
    except OSError:
        pass
    return found


def cpuBusy() -> dict[str, tuple[int, int]]:
    """
    (total, idle) jiffies of each CPU, from /proc/stat.
    """
    busy = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                name, *values = line.split()
                numbers = [int(v) for v in values]
                busy[name[3:]] = (sum(numbers), numbers[3] + numbers[4])
    return busy


def listenOverflows() -> int:
    with open("/proc/net/netstat") as f:
        lines = f.read().splitlines()
    for names, values in zip(lines[::2], lines[1::2]):
        if names.startswith("TcpExt:"):
            return int(dict(zip(names.split(), values.split()))["ListenOverflows"])
    return 0


# --- processes --------------------------------------------------------------

def freePort() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def waitForPort(port: int, process: subprocess.Popen, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with status {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port} within {timeout} s")


class Server:
    """
    A process we started (pinned to one CPU) and the port it listens on.
    """

    def __init__(self, name: str, args: list[str], port: int, scratch: str, env=None,
                 cpu: str = PROXY_CPU, companions: tuple["Server", ...] = ()) -> None:
        self.name = name
        self.port = port
        #: Servers started for this one (a backend of its own), stopped with it.
        self.companions = companions
        self.log = open(os.path.join(scratch, f"{name}-{port}.log"), "wb")
        self.process = subprocess.Popen(
            ["taskset", "-c", cpu, *args], stdin=subprocess.DEVNULL,
            stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        waitForPort(port, self.process, name)

    def pids(self) -> list[int]:
        """
        The process and its children (nginx: master and worker).
        """
        return [self.process.pid, *childrenOf(self.process.pid)]

    def stop(self) -> None:
        for companion in self.companions:
            companion.stop()
        if self.process.poll() is None:
            pids = self.pids()
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                for pid in pids:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                self.process.wait(10)
        self.log.close()


def startEcho(scratch: str, cpu: str) -> Server:
    port = freePort()
    return Server("echo", ["node", os.path.join(BENCH, "echo_server.mjs"), "--port", str(port)],
                  port, scratch, cpu=cpu)


def fromTemplate(template: str, scratch: str, name: str, **values: str) -> str:
    with open(os.path.join(BENCH, template)) as f:
        text = f.read()
    for key, value in values.items():
        text = text.replace(f"@{key}@", value)
    path = os.path.join(scratch, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def startNginx(scratch: str, backendPort: int, options) -> Server:
    port = freePort()
    directory = tempfile.mkdtemp(prefix="nginx-", dir=scratch)
    config = fromTemplate("nginx.conf", scratch, f"nginx-{port}.conf", DIR=directory,
                          PORT=str(port), BACKEND_PORT=str(backendPort))
    return Server("nginx", [options.nginx, "-p", directory, "-c", config], port, scratch)


def startHAProxy(scratch: str, backendPort: int, options) -> Server:
    port = freePort()
    config = fromTemplate("haproxy.cfg", scratch, f"haproxy-{port}.cfg",
                          PORT=str(port), BACKEND_PORT=str(backendPort))
    return Server("haproxy", [options.haproxy, "-db", "-f", config], port, scratch)


def startGateway(scratch: str, backendPort: int, options) -> Server:
    port = freePort()
    listen = f"tcp:{port}:interface=127.0.0.1"
    if options.gateway_listen_options:
        listen += ":" + options.gateway_listen_options
    config = os.path.join(scratch, f"transparent-{port}.toml")
    with open(config, "w") as f:
        # Every client comes from 127.0.0.1: no per-address bound.
        f.write(f"[limits]\nmax_connections = {max(10000, 2 * options.idle)}\n"
                "max_connections_per_ip = 0\n")
    env = dict(os.environ, PYTHONPATH=ROOT, PYTHONUNBUFFERED="1")
    return Server(
        "txgateway",
        [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
         "-n", "--pidfile=", "gateway", "--listen", listen, "--config", config,
         "--backend", f"ws://127.0.0.1:{backendPort}"],
        port, scratch, env=env)


def startSessionGateway(scratch: str, backendPort: int, options) -> Server:
    """
    The same gateway, with bounds that let the idle and detached-session
    runs hold their sessions: a grace period longer than a run, and room
    for every session and connection they open.  Clients that offer the
    txgateway.v1 subprotocol, or POST with C{?txgw=}, get session mode.
    """
    port = freePort()
    config = os.path.join(scratch, f"session-{port}.toml")
    with open(config, "w") as f:
        sessions = max(20000, 3 * options.idle)
        # Every client comes from 127.0.0.1: the per-address bounds are as
        # wide as the node's.
        f.write(f"[session]\ngrace = 600.0\nmax_sessions = {sessions}\n"
                f"max_sessions_per_ip = {sessions}\nmax_opens_per_ip = {sessions}\n"
                f"open_burst_per_ip = {sessions}\n"
                f"[limits]\nmax_connections = {max(30000, 5 * options.idle)}\nmax_connections_per_ip = 0\n")
    listen = f"tcp:{port}:interface=127.0.0.1"
    if options.gateway_listen_options:
        listen += ":" + options.gateway_listen_options
    env = dict(os.environ, PYTHONPATH=ROOT, PYTHONUNBUFFERED="1")
    return Server(
        "txgateway-session",
        [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
         "-n", "--pidfile=", "gateway", "--listen", listen, "--config", config,
         "--backend", f"ws://127.0.0.1:{backendPort}"],
        port, scratch, env=env)


def startSocketIO(scratch: str, backendPort: int, options) -> Server:
    """
    python-socketio's echo server (it needs no backend), with the bench's
    own Python (bench/.venv).
    """
    port = freePort()
    return Server("socketio", [options.socketio_python, os.path.join(BENCH, "socketio_server.py"),
                               "--port", str(port)], port, scratch)


def startNodeSocketIO(scratch: str, backendPort: int, options) -> Server:
    """
    Node Socket.IO 4's echo server (it needs no backend), from
    bench/node_modules.
    """
    port = freePort()
    return Server("socketio-node", ["node", os.path.join(BENCH, "socketio_server.mjs"),
                                    "--port", str(port)], port, scratch)


def startSocketIOGateway(scratch: str, backendPort: int, options) -> Server:
    """
    txgateway with one Socket.IO route (Engine.IO v4 ends at the gateway)
    in front of a Node Socket.IO server of its own, which runs where the
    echo backend does (CPU 1 in the default placement), as a backend would.
    """
    backendCpu = PROXY_CPU if options.placement == "shared" else LOAD_CPU
    port = freePort()
    backend = Server("socketio-backend", ["node", os.path.join(BENCH, "socketio_server.mjs"),
                                          "--port", str(port)], port, scratch, cpu=backendCpu)
    gatewayPort = freePort()
    config = os.path.join(scratch, f"socketio-gateway-{gatewayPort}.toml")
    sessions = max(20000, 3 * options.idle)
    with open(config, "w") as f:
        # Every client comes from 127.0.0.1: the per-address bounds are as
        # wide as the node's.
        f.write(f"[session]\nmax_sessions = {sessions}\nmax_sessions_per_ip = {sessions}\n"
                f"max_opens_per_ip = {sessions}\nopen_burst_per_ip = {sessions}\n"
                f"[limits]\nmax_connections = {max(30000, 5 * options.idle)}\nmax_connections_per_ip = 0\n"
                '[[route]]\nprefix = "/socket.io/"\npool = "sio"\nprotocol = "socket.io"\n'
                f'[pool.sio]\n[[pool.sio.backend]]\nurl = "ws://127.0.0.1:{port}"\n')
    listen = f"tcp:{gatewayPort}:interface=127.0.0.1"
    env = dict(os.environ, PYTHONPATH=ROOT, PYTHONUNBUFFERED="1")
    try:
        return Server(
            "txgateway-socketio",
            [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
             "-n", "--pidfile=", "gateway", "--listen", listen, "--config", config],
            gatewayPort, scratch, env=env, companions=(backend,))
    except BaseException:
        backend.stop()
        raise


STARTERS = {"nginx": startNginx, "HAProxy": startHAProxy, "txgateway": startGateway,
            "session": startSessionGateway, "socketio": startSocketIO,
            "socketio-node": startNodeSocketIO, "socketio-gateway": startSocketIOGateway}


# --- the load generator -----------------------------------------------------

class Window:
    """
    CPU time of the watched processes and busy time of each CPU, between
    the load generator's "start" and "stop" marks.
    """

    def __init__(self, watched: dict[str, list[int]]) -> None:
        self.watched = watched
        self.marks: dict[str, tuple] = {}

    def mark(self, event: str) -> None:
        self.marks[event] = (time.monotonic(), cpuBusy(),
                             {name: sum(cpuTicks(p) for p in pids)
                              for name, pids in self.watched.items()})

    def usage(self) -> dict:
        (t0, busy0, ticks0), (t1, busy1, ticks1) = self.marks["start"], self.marks["stop"]
        seconds = t1 - t0
        result = {"windowSeconds": seconds}
        for name in self.watched:
            result[f"{name}Cpu"] = (ticks1[name] - ticks0[name]) / CLK_TCK / seconds
        for cpu in (PROXY_CPU, LOAD_CPU):
            total = busy1[cpu][0] - busy0[cpu][0]
            idle = busy1[cpu][1] - busy0[cpu][1]
            result[f"cpu{cpu}Busy"] = (total - idle) / total if total else 0.0
        return result


class Target:
    """
    How a configuration's clients reach it: the load generator (script) and
    the arguments that name the server.
    """

    def __init__(self, config: str, port: int) -> None:
        self.config = config
        if config in SESSION_CLIENTS:
            client, transport = SESSION_CLIENTS[config]
            self.script = "session_load.mjs"
            path = "/bench" if client == "txgw" else ""
            self.arguments = ["--client", client, "--transport", transport,
                              "--url", f"http://127.0.0.1:{port}{path}"]
        else:
            self.script = "load.mjs"
            self.arguments = ["--url", f"ws://127.0.0.1:{port}/bench"]


def runLoad(target: Target, arguments: list[str], watched: dict[str, list[int]],
            timeout: float) -> dict:
    """
    Run the target's load generator on CPU 1 and return its JSON result,
    with the CPU use of the watched processes during its measured window.
    """
    arguments = [*target.arguments, *arguments]
    process = subprocess.Popen(
        ["taskset", "-c", LOAD_CPU, "node", os.path.join(BENCH, target.script), *arguments],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True, cwd=BENCH)
    watchdog = threading.Timer(timeout, process.kill)
    watchdog.start()
    window = Window(watched)
    result = None
    try:
        for line in process.stdout:
            message = json.loads(line)
            if "event" in message:
                window.mark(message["event"])
            else:
                result = message
        process.wait()
    finally:
        watchdog.cancel()
        if process.poll() is None:
            process.kill()
            process.wait()
    if result is None:
        raise RuntimeError(f"{target.script} {' '.join(arguments)}: no result "
                           f"(status {process.returncode})")
    if result.get("timedOut") or result.get("failed"):
        raise RuntimeError(f"{target.script} {' '.join(arguments)}: {result}")
    if {"start", "stop"} <= window.marks.keys():
        result.update(window.usage())
    return result


# --- workloads --------------------------------------------------------------

def throughput(target: Target, watched, o) -> dict:
    return runLoad(target, ["--mode", "throughput", "--connections", str(o.connections),
                    "--inflight", str(o.inflight), "--size", str(o.size),
                    "--duration", str(o.duration), "--warmup", str(o.warmup)],
                   watched, o.warmup + o.duration + 60)


# A process that wakes every millisecond and does nothing else.
TICKER = "import time\nwhile True:\n    time.sleep(0.001)\n"


def latency(target: Target, watched, o) -> dict:
    """
    The latency run.  With C{--keep-awake} (the default), a ticker on each
    CPU wakes every millisecond for the length of the run, so that neither
    CPU goes idle long enough for the hypervisor to take it away: on this
    project's VM a CPU woken from idle otherwise adds milliseconds at p99 to
    every configuration alike (docs/performance.md).  It costs each CPU
    about 1%.
    """
    tickers = []
    if o.keep_awake:
        tickers = [subprocess.Popen(["taskset", "-c", cpu, sys.executable, "-c", TICKER])
                   for cpu in (PROXY_CPU, LOAD_CPU)]
    try:
        return runLoad(target, ["--mode", "latency", "--connections", str(o.connections),
                        "--rate", str(o.rate), "--size", str(o.size),
                        "--duration", str(o.latency_duration), "--warmup", str(o.warmup)],
                       watched, o.warmup + o.latency_duration + 60)
    finally:
        for ticker in tickers:
            ticker.kill()
            ticker.wait()


def connect(target: Target, watched, o, client: str = "lean") -> dict:
    """
    The connection set-up run: plain WebSocket clients use the lean client
    (or C{client}); session clients open a session and end it.
    """
    overflows = listenOverflows()
    extra = ["--client", client] if target.script == "load.mjs" else []
    result = runLoad(target, ["--mode", "connect", "--count", str(o.connects),
                              "--concurrency", str(o.concurrency), *extra],
                     watched, 400)
    result["listenOverflows"] = listenOverflows() - overflows
    return result


class Holder:
    """
    A load generator holding connections (or sessions) open: C{--mode
    hold}, ended by closing its stdin.
    """

    def __init__(self, target: Target, count: int, o) -> None:
        self.target = target
        self.process = subprocess.Popen(
            ["taskset", "-c", LOAD_CPU, "node", os.path.join(BENCH, target.script),
             *target.arguments, "--mode", "hold", "--count", str(count),
             "--concurrency", str(o.concurrency)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=BENCH)
        self.watchdog = threading.Timer(300, self.process.kill)
        self.watchdog.start()
        opened = self.line()
        if opened.get("opened") != count:
            self.close()
            raise RuntimeError(f"{target.script} --mode hold: {opened}")

    def line(self) -> dict:
        """
        @return: the next JSON line the load generator prints.
        """
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.target.script} --mode hold: no result "
                               f"(status {self.process.poll()})")
        return json.loads(line)

    def drop(self) -> dict:
        """
        Drop every connection without a close (sessions are detached).
        """
        self.process.stdin.write("drop\n")
        self.process.stdin.flush()
        return self.line()

    def close(self) -> None:
        """
        End the load generator (its connections close with it).
        """
        try:
            self.process.stdin.close()
            self.process.wait(60)
        finally:
            self.watchdog.cancel()
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()


def warmedBaseline(server: Server, target: Target, o) -> int:
    """
    Warm C{server} up (100 connects) and return its processes' RSS once
    idle.
    """
    runLoad(target, ["--mode", "connect", "--count", "100", "--concurrency", "10"], {}, 120)
    time.sleep(o.settle)
    return sum(rssKiB(p) for p in server.pids())


def idleMemory(server: Server, target: Target, o) -> dict:
    """
    RSS per open, idle connection (or session) of C{server}'s processes,
    over its RSS once warmed up (100 connects) and idle.
    """
    baseline = warmedBaseline(server, target, o)
    holder = Holder(target, o.idle, o)
    try:
        time.sleep(o.settle)
        pids = server.pids()
        loaded = sum(rssKiB(p) for p in pids)
    finally:
        holder.close()
    return {"baselineKiB": baseline, "loadedKiB": loaded,
            "perConnectionKiB": (loaded - baseline) / o.idle, "processes": len(pids)}


def detachedMemory(server: Server, target: Target, o) -> dict:
    """
    RSS per detached session: two rounds of C{o.idle} sessions opened over
    WebSocket and then dropped without a close (each session keeps its
    backend connection and waits for a resume).  Round 2 reuses the memory
    that round 1's client connections freed (RSS never shrinks), so what it
    adds once its connections are dropped is the cost of its detached
    sessions alone.
    """
    baseline = warmedBaseline(server, target, o)
    attached, detached = [], []
    for _ in range(2):
        holder = Holder(target, o.idle, o)
        try:
            time.sleep(o.settle)
            attached.append(sum(rssKiB(p) for p in server.pids()))
            dropped = holder.drop()
            if dropped.get("dropped") != o.idle:
                raise RuntimeError(f"drop: {dropped}")
            time.sleep(o.settle)
            detached.append(sum(rssKiB(p) for p in server.pids()))
        finally:
            holder.close()
    return {"baselineKiB": baseline, "attachedKiB": attached, "detachedKiB": detached,
            "perAttachedKiB": (attached[0] - baseline) / o.idle,
            "perDetachedKiB": (detached[1] - detached[0]) / o.idle}


# --- the table --------------------------------------------------------------

def median(values):
    return statistics.median(values) if values else None


def spread(values) -> str:
    """
    Half the range of the runs, as a percentage of their median.
    """
    m = median(values)
    if not values or len(values) < 2 or not m:
        return ""
    return f" ±{50 * (max(values) - min(values)) / abs(m):.0f}%"


def number(value: float, unit: str = "") -> str:
    if value is None:
        return "–"
    if unit == "count":
        return f"{value:.0f}"
    if unit == "ms":
        return f"{value:.2f}" if abs(value) < 10 else f"{value:.1f}"
    if abs(value) >= 10000:
        return f"{value / 1000:.1f}k"
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.1f}"


def ratio(value, reference) -> str:
    if value is None or not reference:
        return ""
    return f" ({value / reference:.2f}x)"


def buildTable(results: dict, o) -> list[str]:
    """
    results[config][workload] is a list of per-run dicts.
    """
    configs = [c for c in CONFIGS if c in results]

    def values(config, workload, key):
        return [r[key] for r in results.get(config, {}).get(workload, []) if r.get(key) is not None]

    def perCore(config, workload, key):
        # Rate per core of CPU the server's processes used in the window.
        return [r[key] / r["proxyCpu"] for r in results.get(config, {}).get(workload, [])
                if r.get("proxyCpu")]

    rows = []

    def row(label, getter, unit="", withRatio=True, withSpread=True, only=None, saturation=None):
        reference = median(getter(REFERENCE)) if withRatio and REFERENCE in configs else None
        cells = []
        for config in configs:
            vs = getter(config) if only is None or config in only else []
            m = median(vs)
            if m is None:
                cells.append("–")
                continue
            cell = number(m, unit) + (spread(vs) if withSpread else "")
            if withRatio and config != REFERENCE:
                cell += ratio(m, reference)
            if saturation and (median(values(config, saturation, "cpu1Busy")) or 0) >= 0.9:
                cell += " †"
            cells.append(cell)
        if any(cell != "–" for cell in cells):
            rows.append(f"| {label} | " + " | ".join(cells) + " |")

    def socketioRow(label, getter, unit="", against=SOCKETIO_OF):
        # Each session configuration's median over python-socketio's (or,
        # with against=NODE_SOCKETIO_OF, Node Socket.IO's), same transport.
        cells = []
        for config in configs:
            other = against.get(config)
            m, ref = median(getter(config)), median(getter(other)) if other else None
            cells.append(f"**{m / ref:.2f}x**" if m is not None and ref else "–")
        if any(cell != "–" for cell in cells):
            rows.append(f"| {label} | " + " | ".join(cells) + " |")

    def percent(config, workload, key):
        return [100 * v for v in values(config, workload, key)]

    servers = [c for c in configs if c != "direct"]
    rows.append("| | " + " | ".join(HEADINGS.get(c, c) for c in configs) + " |")
    rows.append("|---|" + "---|" * len(configs))
    rate = lambda c: values(c, "throughput", "roundTripsPerSecond")  # noqa: E731
    row(f"throughput: round trips/s ({o.connections} conns × {o.inflight} in flight, "
        f"{o.size} B text, {o.duration:g} s)", rate, saturation="throughput")
    socketioRow("　÷ python-socketio's, same transport", rate)
    socketioRow("　÷ Node Socket.IO's, same transport (via txgateway: the hop's cost)", rate,
                against=NODE_SOCKETIO_OF)
    row("　server CPU, % of one core", lambda c: percent(c, "throughput", "proxyCpu"),
        withRatio=False, withSpread=False, only=servers)
    row("　round trips/s per server core (rate ÷ server CPU)",
        lambda c: perCore(c, "throughput", "roundTripsPerSecond"), only=servers)
    socketioRow("　per core ÷ python-socketio's, same transport",
                lambda c: perCore(c, "throughput", "roundTripsPerSecond"))
    socketioRow("　per core ÷ Node Socket.IO's, same transport",
                lambda c: perCore(c, "throughput", "roundTripsPerSecond"), against=NODE_SOCKETIO_OF)
    row(f"　CPU 0 busy % ({ON_CPU0[o.placement]})", lambda c: percent(c, "throughput", "cpu0Busy"),
        withRatio=False, withSpread=False)
    row(f"　CPU 1 busy % ({ON_CPU1[o.placement]})", lambda c: percent(c, "throughput", "cpu1Busy"),
        withRatio=False, withSpread=False)
    for key in ("p50", "p90", "p99", "max"):
        awake = ", CPUs kept awake" if o.keep_awake else ""
        label = (f"latency {key} ms ({o.rate:g} msgs/s over {o.connections} conns, "
                 f"{o.latency_duration:g} s{awake})" if key == "p50" else f"latency {key} ms")
        row(label, lambda c, key=key: values(c, "latency", key), unit="ms")
    socketioRow("　p99 ÷ python-socketio's, same transport (lower is better)",
                lambda c: values(c, "latency", "p99"))
    direct99 = median(values("direct", "latency", "p99"))
    row("　added p99 over direct, ms",
        lambda c: [v - direct99 for v in values(c, "latency", "p99")] if direct99 is not None else [],
        unit="ms", withRatio=False, only=servers)
    connects = lambda c: values(c, "connect", "connectsPerSecond")  # noqa: E731
    row(f"connection set-up: connects/s ({o.connects} connects, {o.concurrency} at a time; "
        "sessions: opened and ended)", connects, saturation="connect")
    socketioRow("　÷ python-socketio's, same transport", connects)
    row("　connects/s per server core (rate ÷ server CPU)",
        lambda c: perCore(c, "connect", "connectsPerSecond"), only=servers)
    row("　server CPU, % of one core", lambda c: percent(c, "connect", "proxyCpu"),
        withRatio=False, withSpread=False, only=servers)
    row("　handshake p99 ms (sessions: until welcome or connect)",
        lambda c: values(c, "connect", "handshakeP99"), unit="ms")
    row("　handshake max ms", lambda c: values(c, "connect", "handshakeMax"), unit="ms")
    row("　listen queue overflows (SYNs dropped, all runs)",
        lambda c: [sum(values(c, "connect", "listenOverflows"))] if values(c, "connect", "listenOverflows") else [],
        unit="count", withRatio=False, withSpread=False)
    idle = lambda c: values(c, "idle", "perConnectionKiB")  # noqa: E731
    row(f"idle memory: RSS KiB per open connection or session ({o.idle} open; "
        "direct: the echo server's own)", idle)
    socketioRow("　÷ python-socketio's, same transport (lower is better)", idle)
    socketioRow("　÷ Node Socket.IO's, same transport (lower is better)", idle, against=NODE_SOCKETIO_OF)
    row("　idle baseline RSS KiB (all the server's processes)",
        lambda c: values(c, "idle", "baselineKiB"), unit="count", withRatio=False)
    row(f"detached session: RSS KiB per session ({o.idle} sessions opened over WebSocket, "
        "then their connections dropped; each keeps its backend connection)",
        lambda c: values(c, "detached", "perDetachedKiB"), withRatio=False)
    row("　the same sessions attached, RSS KiB per session",
        lambda c: values(c, "detached", "perAttachedKiB"), withRatio=False)
    return rows


def ceilingLines(results: dict, o) -> list[str]:
    """
    How far the load generator's own ceiling is above what it measured.
    """
    def medianOf(config, workload, key):
        return median([r[key] for r in results.get(config, {}).get(workload, [])
                       if r.get(key) is not None])

    lines = []
    direct = medianOf("direct", "throughput", "roundTripsPerSecond")
    busy = medianOf("direct", "throughput", "cpu1Busy")
    proxies = [c for c in ("nginx", "HAProxy", "txgateway") if c in results]
    top = max([medianOf(c, "throughput", "roundTripsPerSecond") or 0 for c in proxies], default=0)
    gateway = medianOf("txgateway", "throughput", "roundTripsPerSecond")
    if direct and top and gateway:
        lines.append(
            f"- throughput: {number(direct)} round trips/s direct "
            f"(CPU 1, {ON_CPU1[o.placement]}, {100 * busy:.0f}% busy): "
            f"{direct / top:.1f}x the best proxied median ({number(top)}), "
            f"{direct / gateway:.1f}x txgateway's ({number(gateway)}).")
    direct = medianOf("direct", "connect", "connectsPerSecond")
    busy = medianOf("direct", "connect", "cpu1Busy")
    top = max([medianOf(c, "connect", "connectsPerSecond") or 0 for c in proxies], default=0)
    gateway = medianOf("txgateway", "connect", "connectsPerSecond")
    if direct and top and gateway:
        lines.append(
            f"- connection set-up (lean client): {number(direct)} connects/s direct "
            f"(CPU 1 {100 * busy:.0f}% busy): {direct / top:.1f}x the best proxied median "
            f"({number(top)}), {direct / gateway:.1f}x txgateway's ({number(gateway)}).")
    wsRate = medianOf("direct", "connect-ws", "connectsPerSecond")
    if wsRate:
        busy = medianOf("direct", "connect-ws", "cpu1Busy")
        lines.append(
            f"- connection set-up with the ws client instead: {number(wsRate)} connects/s direct "
            f"(CPU 1 {100 * busy:.0f}% busy), which is why connect runs use the lean client.")
    lines.append(
        f"- latency: {o.rate:g} msgs/s is a fixed rate, far below the throughput ceiling; "
        f"the direct row is the floor the load generator and backend add by themselves.")
    return lines


# --- main -------------------------------------------------------------------

def facts(o) -> list[str]:
    def output(args):
        try:
            done = subprocess.run(args, capture_output=True, text=True, timeout=10)
            return (done.stdout + done.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "?"

    def nodeVersion(package):
        try:
            with open(os.path.join(BENCH, "node_modules", package, "package.json")) as f:
                return json.load(f)["version"]
        except OSError:
            return "?"

    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    import autobahn
    import twisted
    socketio = output([o.socketio_python, "-c",
                       "import platform; from importlib.metadata import version as v; "
                       "print(f\"python-socketio {v('python-socketio')} (python-engineio "
                       "{v('python-engineio')}, aiohttp {v('aiohttp')}, Python "
                       "{platform.python_version()}), in bench/.venv\")"])
    return [
        f"- CPUs: {os.cpu_count()} (nproc), {model}; kernel {platform.release()}",
        f"- {output([o.nginx, '-v'])}; {output([o.haproxy, '-v'])}",
        f"- node {output(['node', '--version'])}, ws {nodeVersion('ws')}, "
        f"socket.io-client {nodeVersion('socket.io-client')}, socket.io {nodeVersion('socket.io')}; "
        f"Python {platform.python_version()}, Twisted {twisted.__version__}, "
        f"autobahn {autobahn.__version__}",
        f"- {socketio}",
    ]


def main(o) -> None:
    began = time.monotonic()
    configs = [c for c in CONFIGS if c in o.configs.split(",")]
    unknown = set(o.configs.split(",")) - set(CONFIGS)
    if unknown:
        raise SystemExit(f"compare.py: unknown --configs {', '.join(sorted(unknown))}; "
                         f"known: {', '.join(CONFIGS)}")
    results: dict[str, dict[str, list]] = {c: {} for c in configs}

    def record(config, workload, result):
        results[config].setdefault(workload, []).append(result)
        print(f"  {config:<17} {workload:<11} " + json.dumps(
            {k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()
             if k not in ("mode",)}), flush=True)

    echoCpu = PROXY_CPU if o.placement == "shared" else LOAD_CPU
    workloadsWanted = set(o.workloads.split(","))
    scratch = tempfile.mkdtemp(prefix="txgateway-bench-")
    servers: dict[str, Server] = {}

    def start(name: str) -> Server:
        if name == "echo":
            return startEcho(scratch, echoCpu)
        return STARTERS[name](scratch, servers["echo"].port, o)

    try:
        servers["echo"] = start("echo")
        for name in dict.fromkeys(SERVER_OF[c] for c in configs):
            if name != "echo":
                servers[name] = start(name)

        def target(config):
            server = servers[SERVER_OF[config]]
            watched = {"echo": servers["echo"].pids()}
            if config != "direct":
                watched["proxy"] = server.pids()
            return Target(config, server.port), watched

        workloads = [("throughput", throughput), ("latency", latency), ("connect", connect)]
        for name, workload in workloads:
            if name not in workloadsWanted:
                continue
            print(f"{name}:", flush=True)
            for run in range(o.runs):
                for config in configs:
                    load, watched = target(config)
                    record(config, name, workload(load, watched, o))
                    time.sleep(o.pause)
        if "connect" in workloadsWanted and "direct" in configs:
            print("connect with the ws client (load generator ceiling only):", flush=True)
            for run in range(o.runs):
                load, watched = target("direct")
                record("direct", "connect-ws", connect(load, watched, o, client="ws"))
                time.sleep(o.pause)
        for name in list(servers):
            if name != "echo":
                servers.pop(name).stop()

        if "idle" in workloadsWanted:
            print("idle memory (fresh processes each run):", flush=True)
        for run in range(o.runs if "idle" in workloadsWanted else 0):
            for config in configs:
                server = start(SERVER_OF[config])
                try:
                    record(config, "idle", idleMemory(server, Target(config, server.port), o))
                finally:
                    server.stop()
                time.sleep(o.pause)

        if "detached" in workloadsWanted and "session WS" in configs:
            print("detached sessions (fresh gateway each run):", flush=True)
            for run in range(o.runs):
                server = start("session")
                try:
                    record("session WS", "detached",
                           detachedMemory(server, Target("session WS", server.port), o))
                finally:
                    server.stop()
                time.sleep(o.pause)
    finally:
        for server in servers.values():
            server.stop()
        if not o.keep_scratch:
            shutil.rmtree(scratch, ignore_errors=True)

    elapsed = time.monotonic() - began
    command = "bench/run" + "".join(f" {a}" for a in sys.argv[1:])
    table = buildTable(results, o)
    lines = [
        "# bench/run results",
        "",
        f"`{command}`, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{elapsed:.0f} s (measurements only; set-up not included).",
        "",
        *facts(o),
        f"- Placement ({o.placement}, taskset): CPU {PROXY_CPU}: {ON_CPU0[o.placement]}; "
        f"CPU {LOAD_CPU}: {ON_CPU1[o.placement]}.  {o.runs} runs per cell, the runs of the "
        f"configurations interleaved.",
        "",
        "Each cell: median of the runs ± half their range (as % of the median), "
        f"and (in brackets) the ratio to {REFERENCE}'s median.  † : CPU 1 "
        f"({ON_CPU1[o.placement]}) was 90% busy or more, so the figure may be that CPU's "
        "limit rather than the server's.  Bold: a txgateway session column over "
        "python-socketio's (or Node Socket.IO's) column of the same transport.  Session and socket.io "
        "clients acknowledge every message, each way.",
        "",
        *table,
        "",
        "Load generator ceiling (bench/load.mjs straight to bench/echo_server.mjs, the "
        "direct column):",
        "",
        *ceilingLines(results, o),
        "",
    ]
    text = "\n".join(lines)
    print()
    print(text)
    with open(os.path.join(BENCH, "results.md"), "w") as f:
        f.write(text)
    with open(os.path.join(BENCH, "results.json"), "w") as f:
        json.dump({"options": vars(o), "results": results}, f, indent=1)
    print(f"(written to bench/results.md; every run's figures in bench/results.json; "
          f"{elapsed:.0f} s)")


def options(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    add = parser.add_argument
    add("--runs", type=int, default=3, help="runs per cell (3)")
    add("--duration", type=float, default=10, help="seconds of each throughput run (10)")
    add("--latency-duration", type=float, default=10, help="seconds of each latency run (10)")
    add("--warmup", type=float, default=1, help="seconds of load before each measured window (1)")
    add("--connections", type=int, default=100, help="connections for throughput and latency (100)")
    add("--inflight", type=int, default=8, help="messages in flight per connection (8)")
    add("--size", type=int, default=64, help="message size in bytes (64)")
    add("--rate", type=float, default=2000, help="messages/s of the latency runs (2000)")
    add("--connects", type=int, default=5000, help="connects per connection set-up run (5000)")
    add("--concurrency", type=int, default=100, help="handshakes at a time (100)")
    add("--idle", type=int, default=5000,
        help="connections (or sessions) held open for idle and detached memory (5000)")
    add("--settle", type=float, default=2, help="seconds to wait before reading RSS (2)")
    add("--pause", type=float, default=0.5, help="seconds between runs (0.5)")
    add("--placement", choices=("split", "shared"), default="split",
        help="split: each server alone on CPU 0, the echo backend with the load generator on "
             "CPU 1 (the default); shared: the echo backend on CPU 0 with the server")
    add("--workloads", default="throughput,latency,connect,idle,detached",
        help="which workloads to run, comma-separated (all five)")
    add("--configs", default=",".join(CONFIGS),
        help="which configurations to run, comma-separated (all: " + ", ".join(CONFIGS) + ")")
    add("--keep-awake", action=argparse.BooleanOptionalAction, default=True,
        help="during latency runs, keep both CPUs from idling with a 1 ms ticker on each "
             "(on by default; --no-keep-awake shows the machine's idle wake-ups)")
    add("--gateway-listen-options", default="",
        help="extra options on the gateway's endpoint string, e.g. backlog=511 (none)")
    add("--nginx", default=shutil.which("nginx") or "/usr/sbin/nginx")
    add("--haproxy", default=shutil.which("haproxy") or "/usr/sbin/haproxy")
    add("--socketio-python", default=os.path.join(BENCH, ".venv", "bin", "python"),
        help="the Python with python-socketio and aiohttp (bench/.venv, made by bench/setup.sh)")
    add("--keep-scratch", action="store_true", help="keep the configs and logs in /tmp")
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(options())
