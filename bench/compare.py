"""
txgateway's transparent mode side by side with nginx and HAProxy.

Run it with C{bench/run}, which sets up what it needs first.  One echo
backend (C{bench/echo_server.mjs}) serves four configurations in the same
run: the client straight to the backend ("direct"), nginx, HAProxy and
C{twistd -n gateway} in transparent mode, each a WebSocket proxy on
127.0.0.1 in front of that backend.  The load generator (C{bench/load.mjs})
runs each workload against each configuration, C{--runs} times, the runs of
the configurations interleaved:

  - throughput: N connections, W 64-byte text messages in flight on each;
  - latency: a fixed rate of messages over N connections, p50/p90/p99/max;
  - connection set-up: C connects (and close handshakes), K at a time;
  - idle memory: C connections held open, RSS per connection of the proxy's
    process(es), over an idle baseline, each run on freshly started
    processes.

CPU placement (C{taskset}): the proxy under test alone on CPU 0, the load
generator and the echo backend on CPU 1 (C{--placement shared} moves the
backend to CPU 0).  The CPU time of every process is read from /proc at the
edges of each measured window, so the table also gives each proxy's rate
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
CONFIGS = ("direct", "nginx", "HAProxy", "txgateway")
REFERENCE = "HAProxy"
ON_CPU0 = {"split": "the proxy alone", "shared": "the proxy and the echo backend"}
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
                 cpu: str = PROXY_CPU) -> None:
        self.name = name
        self.port = port
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
    env = dict(os.environ, PYTHONPATH=ROOT, PYTHONUNBUFFERED="1")
    return Server(
        "txgateway",
        [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
         "-n", "--pidfile=", "gateway", "--listen", listen,
         "--backend", f"ws://127.0.0.1:{backendPort}"],
        port, scratch, env=env)


STARTERS = {"nginx": startNginx, "HAProxy": startHAProxy, "txgateway": startGateway}


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


def runLoad(arguments: list[str], watched: dict[str, list[int]], timeout: float) -> dict:
    """
    Run bench/load.mjs on CPU 1 and return its JSON result, with the CPU use
    of the watched processes during its measured window.
    """
    process = subprocess.Popen(
        ["taskset", "-c", LOAD_CPU, "node", os.path.join(BENCH, "load.mjs"), *arguments],
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
        raise RuntimeError(f"load.mjs {' '.join(arguments)}: no result (status {process.returncode})")
    if result.get("timedOut") or result.get("failed"):
        raise RuntimeError(f"load.mjs {' '.join(arguments)}: {result}")
    if {"start", "stop"} <= window.marks.keys():
        result.update(window.usage())
    return result


# --- workloads --------------------------------------------------------------

def throughput(url: str, watched, o) -> dict:
    return runLoad(["--mode", "throughput", "--url", url, "--connections", str(o.connections),
                    "--inflight", str(o.inflight), "--size", str(o.size),
                    "--duration", str(o.duration), "--warmup", str(o.warmup)],
                   watched, o.warmup + o.duration + 60)


# A process that wakes every millisecond and does nothing else.
TICKER = "import time\nwhile True:\n    time.sleep(0.001)\n"


def latency(url: str, watched, o) -> dict:
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
        return runLoad(["--mode", "latency", "--url", url, "--connections", str(o.connections),
                        "--rate", str(o.rate), "--size", str(o.size),
                        "--duration", str(o.latency_duration), "--warmup", str(o.warmup)],
                       watched, o.warmup + o.latency_duration + 60)
    finally:
        for ticker in tickers:
            ticker.kill()
            ticker.wait()


def connect(url: str, watched, o, client: str = "lean") -> dict:
    overflows = listenOverflows()
    result = runLoad(["--mode", "connect", "--url", url, "--count", str(o.connects),
                      "--concurrency", str(o.concurrency), "--client", client],
                     watched, 300)
    result["listenOverflows"] = listenOverflows() - overflows
    return result


def idleMemory(server: Server, url: str, o) -> dict:
    """
    RSS per open, idle connection of C{server}'s processes, over its RSS
    once warmed up (100 connects) and idle.
    """
    runLoad(["--mode", "connect", "--url", url, "--count", "100", "--concurrency", "10"], {}, 60)
    time.sleep(o.settle)
    pids = server.pids()
    baseline = sum(rssKiB(p) for p in pids)
    process = subprocess.Popen(
        ["taskset", "-c", LOAD_CPU, "node", os.path.join(BENCH, "load.mjs"), "--mode", "hold",
         "--url", url, "--count", str(o.idle), "--concurrency", str(o.concurrency)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=BENCH)
    watchdog = threading.Timer(300, process.kill)
    watchdog.start()
    try:
        line = process.stdout.readline()
        if not line:
            raise RuntimeError(f"load.mjs --mode hold: no result (status {process.poll()})")
        opened = json.loads(line)
        if opened.get("opened") != o.idle:
            raise RuntimeError(f"load.mjs --mode hold: {opened}")
        time.sleep(o.settle)
        pids = server.pids()
        loaded = sum(rssKiB(p) for p in pids)
    finally:
        process.stdin.close()
        try:
            process.wait(60)
        finally:
            watchdog.cancel()
    return {"baselineKiB": baseline, "loadedKiB": loaded,
            "perConnectionKiB": (loaded - baseline) / o.idle, "processes": len(pids)}


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

    def values(config, workload, key):
        return [r[key] for r in results[config].get(workload, []) if r.get(key) is not None]

    def perCore(config, workload, key):
        # Rate per core of CPU the proxy's processes used in the window.
        return [r[key] / r["proxyCpu"] for r in results[config].get(workload, [])
                if r.get("proxyCpu")]

    rows = []

    def row(label, getter, unit="", withRatio=True, withSpread=True, configs=CONFIGS,
            saturation=None):
        reference = median(getter(REFERENCE)) if withRatio else None
        cells = []
        for config in CONFIGS:
            vs = getter(config) if config in configs else []
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
        rows.append(f"| {label} | " + " | ".join(cells) + " |")

    def percent(config, workload, key):
        return [100 * v for v in values(config, workload, key)]

    proxies = CONFIGS[1:]
    rows.append("| | " + " | ".join(CONFIGS) + " |")
    rows.append("|---|" + "---|" * len(CONFIGS))
    row(f"throughput: round trips/s ({o.connections} conns × {o.inflight} in flight, "
        f"{o.size} B text, {o.duration:g} s)", lambda c: values(c, "throughput", "roundTripsPerSecond"),
        saturation="throughput")
    row("　proxy CPU, % of one core", lambda c: percent(c, "throughput", "proxyCpu"),
        withRatio=False, withSpread=False, configs=proxies)
    row("　round trips/s per proxy core (rate ÷ proxy CPU)",
        lambda c: perCore(c, "throughput", "roundTripsPerSecond"), configs=proxies)
    row(f"　CPU 0 busy % ({ON_CPU0[o.placement]})", lambda c: percent(c, "throughput", "cpu0Busy"),
        withRatio=False, withSpread=False)
    row(f"　CPU 1 busy % ({ON_CPU1[o.placement]})", lambda c: percent(c, "throughput", "cpu1Busy"),
        withRatio=False, withSpread=False)
    for key in ("p50", "p90", "p99", "max"):
        awake = ", CPUs kept awake" if o.keep_awake else ""
        label = (f"latency {key} ms ({o.rate:g} msgs/s over {o.connections} conns, "
                 f"{o.latency_duration:g} s{awake})" if key == "p50" else f"latency {key} ms")
        row(label, lambda c, key=key: values(c, "latency", key), unit="ms")
    direct99 = median(values("direct", "latency", "p99"))
    row("　added p99 over direct, ms",
        lambda c: [v - direct99 for v in values(c, "latency", "p99")] if direct99 is not None else [],
        unit="ms", withRatio=False, configs=proxies)
    row(f"connection set-up: connects/s ({o.connects} connects, {o.concurrency} at a time)",
        lambda c: values(c, "connect", "connectsPerSecond"), saturation="connect")
    row("　connects/s per proxy core (rate ÷ proxy CPU)",
        lambda c: perCore(c, "connect", "connectsPerSecond"), configs=proxies)
    row("　proxy CPU, % of one core", lambda c: percent(c, "connect", "proxyCpu"),
        withRatio=False, withSpread=False, configs=proxies)
    row("　handshake p99 ms", lambda c: values(c, "connect", "handshakeP99"), unit="ms")
    row("　handshake max ms", lambda c: values(c, "connect", "handshakeMax"), unit="ms")
    row("　listen queue overflows (SYNs dropped, all runs)",
        lambda c: [sum(values(c, "connect", "listenOverflows"))] if values(c, "connect", "listenOverflows") else [],
        unit="count", withRatio=False, withSpread=False)
    row(f"idle memory: RSS KiB per open connection ({o.idle} open; direct: the echo server's own)",
        lambda c: values(c, "idle", "perConnectionKiB"))
    row("　idle baseline RSS KiB (all the proxy's processes)",
        lambda c: values(c, "idle", "baselineKiB"), unit="count", withRatio=False)
    return rows


def ceilingLines(results: dict, o) -> list[str]:
    """
    How far the load generator's own ceiling is above what it measured.
    """
    def medianOf(config, workload, key):
        return median([r[key] for r in results[config].get(workload, []) if r.get(key) is not None])

    lines = []
    direct = medianOf("direct", "throughput", "roundTripsPerSecond")
    busy = medianOf("direct", "throughput", "cpu1Busy")
    top = max((medianOf(c, "throughput", "roundTripsPerSecond") or 0) for c in CONFIGS[1:])
    gateway = medianOf("txgateway", "throughput", "roundTripsPerSecond")
    if direct and top and gateway:
        lines.append(
            f"- throughput: {number(direct)} round trips/s direct "
            f"(CPU 1, {ON_CPU1[o.placement]}, {100 * busy:.0f}% busy): "
            f"{direct / top:.1f}x the best proxied median ({number(top)}), "
            f"{direct / gateway:.1f}x txgateway's ({number(gateway)}).")
    direct = medianOf("direct", "connect", "connectsPerSecond")
    busy = medianOf("direct", "connect", "cpu1Busy")
    top = max((medianOf(c, "connect", "connectsPerSecond") or 0) for c in CONFIGS[1:])
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

    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    import twisted
    with open(os.path.join(BENCH, "node_modules", "ws", "package.json")) as f:
        wsVersion = json.load(f)["version"]
    return [
        f"- CPUs: {os.cpu_count()} (nproc), {model}; kernel {platform.release()}",
        f"- {output([o.nginx, '-v'])}; {output([o.haproxy, '-v'])}",
        f"- node {output(['node', '--version'])}, ws {wsVersion}; "
        f"Python {platform.python_version()}, Twisted {twisted.__version__}",
    ]


def main(o) -> None:
    began = time.monotonic()
    results: dict[str, dict[str, list]] = {c: {} for c in CONFIGS}

    def record(config, workload, result):
        results[config].setdefault(workload, []).append(result)
        print(f"  {config:<10} {workload:<11} " + json.dumps(
            {k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()
             if k not in ("mode",)}), flush=True)

    echoCpu = PROXY_CPU if o.placement == "shared" else LOAD_CPU
    workloadsWanted = set(o.workloads.split(","))
    scratch = tempfile.mkdtemp(prefix="txgateway-bench-")
    servers: dict[str, Server] = {}
    try:
        echo = startEcho(scratch, echoCpu)
        servers["echo"] = echo
        for config in CONFIGS[1:]:
            servers[config] = STARTERS[config](scratch, echo.port, o)

        def target(config):
            server = echo if config == "direct" else servers[config]
            watched = {"echo": echo.pids()}
            if config != "direct":
                watched["proxy"] = server.pids()
            return f"ws://127.0.0.1:{server.port}/bench", watched

        workloads = [("throughput", throughput), ("latency", latency), ("connect", connect)]
        for name, workload in workloads:
            if name not in workloadsWanted:
                continue
            print(f"{name}:", flush=True)
            for run in range(o.runs):
                for config in CONFIGS:
                    url, watched = target(config)
                    record(config, name, workload(url, watched, o))
                    time.sleep(o.pause)
        if "connect" in workloadsWanted:
            print("connect with the ws client (load generator ceiling only):", flush=True)
        for run in range(o.runs if "connect" in workloadsWanted else 0):
            url, watched = target("direct")
            record("direct", "connect-ws", connect(url, watched, o, client="ws"))
            time.sleep(o.pause)
        for config in CONFIGS[1:]:
            servers.pop(config).stop()

        if "idle" in workloadsWanted:
            print("idle memory (fresh processes each run):", flush=True)
        for run in range(o.runs if "idle" in workloadsWanted else 0):
            for config in CONFIGS:
                if config == "direct":
                    server = startEcho(scratch, echoCpu)
                else:
                    server = STARTERS[config](scratch, echo.port, o)
                try:
                    record(config, "idle", idleMemory(server, f"ws://127.0.0.1:{server.port}/bench", o))
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
        "limit rather than the proxy's.",
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
    add("--idle", type=int, default=5000, help="connections held open for idle memory (5000)")
    add("--settle", type=float, default=2, help="seconds to wait before reading RSS (2)")
    add("--pause", type=float, default=0.5, help="seconds between runs (0.5)")
    add("--placement", choices=("split", "shared"), default="split",
        help="split: each proxy alone on CPU 0, the echo backend with the load generator on "
             "CPU 1 (the default); shared: the echo backend on CPU 0 with the proxy")
    add("--workloads", default="throughput,latency,connect,idle",
        help="which workloads to run, comma-separated (all four)")
    add("--keep-awake", action=argparse.BooleanOptionalAction, default=True,
        help="during latency runs, keep both CPUs from idling with a 1 ms ticker on each "
             "(on by default; --no-keep-awake shows the machine's idle wake-ups)")
    add("--gateway-listen-options", default="",
        help="extra options on the gateway's endpoint string, e.g. backlog=511 (none)")
    add("--nginx", default=shutil.which("nginx") or "/usr/sbin/nginx")
    add("--haproxy", default=shutil.which("haproxy") or "/usr/sbin/haproxy")
    add("--keep-scratch", action="store_true", help="keep the configs and logs in /tmp")
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(options())
