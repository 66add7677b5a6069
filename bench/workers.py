"""
Worker processes measured: C{twistd gateway --workers N} in transparent
mode, against one process, with the load generator of bench/run
(C{bench/load.mjs}, Node) and its echo backend (C{bench/echo_server.mjs}).

    .venv/bin/python bench/workers.py [--duration 10] [--connections 100]
        [--inflight 8] [--connects 3000] [--concurrency 50]

For each configuration, on freshly started processes (with a real
redis-server, which several workers need):

  - throughput: N connections, W messages in flight on each, for D
    seconds (round trips per second), with the CPU use of the gateway's
    processes and of each CPU;
  - session throughput: the same over the session protocol (WebSocket,
    every message acknowledged each way), where the gateway's own CPU is
    the limit, not the load generator's;
  - spread: the connections each worker holds in the middle of that run
    (the admin API's C{GET /workers});
  - connection set-up: C connects (and closes), K at a time;
  - memory: the RSS of the supervisor and of each worker, idle after
    start-up and after the runs.

Configurations (CPU placement with C{taskset}; the load generator and the
echo backend always on CPU 1, as in bench/run):

  - 1 process, in-memory map: the gateway as it runs without C{--workers}
    or Redis, alone on CPU 0 (what Redis, which workers need, costs);
  - 1 process: the same with the Redis session map (C{--workers 1});
  - 2 workers on CPU 0: both workers on the one CPU (the cost of the
    supervisor and of a second process, no CPU gained);
  - 2 workers on CPUs 0-1: the second worker shares CPU 1 with the load
    generator and the backend.  On a 2-core machine this is the only way to
    give a second worker a CPU, so the figure says how far a second core
    helps when the load generator is busy on it too, not what a machine
    with spare cores gets.

Prints one table, with the machine's load average around each run (other
work on a shared machine lowers every rate: the rate per gateway
CPU-second is the steadier figure); asserts nothing.  Every run is bounded (the load
generator has a watchdog), and every process started is stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH)

import compare  # noqa: E402  (bench/run's harness: processes, /proc, the load generator)

TOKEN = "bench-workers-admin-token-0123456789"

#: (name, workers, CPUs, session map)
CONFIGS = [
    ("1 process, in-memory map", 1, "0", "memory"),
    ("1 process", 1, "0", "redis"),
    ("2 workers on CPU 0", 2, "0", "redis"),
    ("2 workers on CPUs 0-1", 2, "0,1", "redis"),
]


def startRedis(scratch: str) -> tuple[subprocess.Popen, int]:
    """
    A redis-server on a free port of 127.0.0.1, on CPU 1.
    """
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("bench/workers.py: redis-server is needed (apt-get install redis-server)")
    port = compare.freePort()
    process = subprocess.Popen(
        ["taskset", "-c", compare.LOAD_CPU, binary, "--bind", "127.0.0.1", "--port", str(port),
         "--save", "", "--appendonly", "no", "--dir", scratch],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    compare.waitForPort(port, process, "redis-server")
    return process, port


def gatewayFile(scratch: str, name: str, backendPort: int, redisPort: int, adminPort: int,
                sessionMap: str) -> str:
    token = os.path.join(scratch, "admin-token")
    with open(token, "w") as f:
        f.write(TOKEN)
    os.chmod(token, 0o600)
    path = os.path.join(scratch, f"{name}.toml")
    with open(path, "w") as f:
        f.write(
            "[timeouts]\nshutdown = 2\n"
            "[limits]\nmax_connections = 30000\n"
            # Every client comes from 127.0.0.1: the per-address bounds are as
            # wide as the node's (as in bench/run).
            "[session]\nmax_sessions_per_ip = 20000\nmax_opens_per_ip = 20000\n"
            "open_burst_per_ip = 20000\n"
            + (f'[session_map]\ntype = "redis"\nurl = "redis://127.0.0.1:{redisPort}/0"\n'
               f'key_prefix = "bench-{name}:"\n' if sessionMap == "redis" else "")
            + f'[admin]\nlisten = "tcp:{adminPort}:interface=127.0.0.1"\ntoken_file = "{token}"\n'
            f'[pool.bench]\n[[pool.bench.backend]]\nurl = "ws://127.0.0.1:{backendPort}"\n'
        )
    return path


class Gateway:
    """
    C{twistd -n gateway --config FILE --workers N} on C{cpus}, waited for
    until every worker listens.
    """

    def __init__(self, scratch: str, name: str, workers: int, cpus: str, config: str,
                 adminPort: int) -> None:
        self.port = compare.freePort()
        self.adminPort = adminPort
        self.workers = workers
        self.logPath = os.path.join(scratch, f"gateway-{name}.log")
        self.log = open(self.logPath, "wb")
        env = dict(os.environ, PYTHONPATH=compare.ROOT, PYTHONUNBUFFERED="1")
        self.process = subprocess.Popen(
            ["taskset", "-c", cpus, sys.executable, "-c",
             "from twisted.scripts.twistd import run; run()", "-n", "--pidfile=", "gateway",
             "--config", config, "--listen", f"tcp:{self.port}:interface=127.0.0.1",
             "--workers", str(workers)],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT, env=env,
            cwd=compare.ROOT)
        ready = r"workers: \d+ of \d+ ready" if workers > 1 else r"gateway listening on"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the gateway exited; see {self.logPath}")
            with open(self.logPath, "rb") as f:
                if re.search(ready.encode(), f.read()):
                    return
            time.sleep(0.1)
        raise RuntimeError(f"the gateway did not start; see {self.logPath}")

    def pids(self) -> dict[str, int]:
        """
        The supervisor (or the one process) and each worker, by name.
        """
        if self.workers == 1:
            return {"process": self.process.pid}
        found = {"supervisor": self.process.pid}
        for worker in self.admin("/workers")["workers"]:
            found[f"worker {worker['worker']}"] = worker["pid"]
        return found

    def admin(self, path: str) -> dict:
        request = urllib.request.Request(f"http://127.0.0.1:{self.adminPort}{path}",
                                         headers={"Authorization": f"Bearer {TOKEN}"})
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.load(answer)

    def rss(self) -> dict[str, int]:
        return {name: compare.rssKiB(pid) for name, pid in self.pids().items()}

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


def spreadDuring(gateway: Gateway, delay: float, into: dict) -> threading.Timer:
    """
    Read, C{delay} seconds from now, the connections each worker holds.
    """

    def read() -> None:
        try:
            if gateway.workers == 1:
                [pool] = gateway.admin("/pools")["pools"]
                into["spread"] = [sum(b["connections"] for b in pool["backends"])]
            else:
                into["spread"] = [w["connections"] for w in gateway.admin("/workers")["workers"]]
        except Exception as e:  # a figure missing, not a failed run
            into["spread"] = f"unread: {e}"

    timer = threading.Timer(delay, read)
    timer.start()
    return timer


def measure(o, scratch: str, backendPort: int, redisPort: int, name: str, workers: int,
            cpus: str, sessionMap: str) -> dict:
    adminPort = compare.freePort()
    config = gatewayFile(scratch, re.sub(r"\W+", "-", name), backendPort, redisPort, adminPort,
                         sessionMap)
    gateway = Gateway(scratch, re.sub(r"\W+", "-", name), workers, cpus, config, adminPort)
    try:
        time.sleep(1)
        result: dict = {"name": name, "rssIdle": gateway.rss(), "loadBefore": os.getloadavg()[0]}
        target = compare.Target("txgateway", gateway.port)
        watched = {"gateway": list(gateway.pids().values())}
        timer = spreadDuring(gateway, o.warmup + o.duration / 2, result)
        try:
            result["throughput"] = compare.runLoad(
                target, ["--mode", "throughput", "--connections", str(o.connections),
                         "--inflight", str(o.inflight), "--size", "64",
                         "--duration", str(o.duration), "--warmup", str(o.warmup)],
                watched, o.warmup + o.duration + 60)
        finally:
            timer.join()
        session = compare.Target("session WS", gateway.port)
        result["session"] = compare.runLoad(
            session, ["--mode", "throughput", "--connections", str(o.connections),
                      "--inflight", str(o.inflight), "--size", "64",
                      "--duration", str(o.duration), "--warmup", str(o.warmup)],
            watched, o.warmup + o.duration + 60)
        result["connect"] = compare.runLoad(
            target, ["--mode", "connect", "--count", str(o.connects),
                     "--concurrency", str(o.concurrency)], watched, 300)
        result["rssAfter"] = gateway.rss()
        result["loadAfter"] = os.getloadavg()[0]
        return result
    finally:
        gateway.stop()


def cpuModel() -> str:
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.machine()


def mib(kib: int) -> str:
    return f"{kib / 1024:.1f}"


def report(results: list[dict], o) -> None:
    print()
    print(f"machine: {os.cpu_count()} CPUs, {cpuModel()}, Python {platform.python_version()}")
    print(f"throughput: {o.connections} connections x {o.inflight} in flight, 64-byte messages,"
          f" {o.duration} s; connects: {o.connects}, {o.concurrency} at a time")
    print()
    print("| configuration | transparent round trips/s | gateway CPU (cores) | per gateway"
          " CPU-second | CPU 0 / CPU 1 busy | session round trips/s | gateway CPU (cores) |"
          " per gateway CPU-second | CPU 0 / CPU 1 busy | connections per worker | connects/s |"
          " RSS idle (MiB) | RSS after (MiB) | load average before/after |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        t = r["throughput"]
        idle = ", ".join(f"{k} {mib(v)}" for k, v in r["rssIdle"].items())
        after = ", ".join(f"{k} {mib(v)}" for k, v in r["rssAfter"].items())
        spread = r.get("spread")
        spread = " / ".join(str(n) for n in spread) if isinstance(spread, list) else str(spread)
        cores = t.get("gatewayCpu", 0)
        perCore = f"{t['roundTripsPerSecond'] / cores:,.0f}" if cores else "-"
        q = r["session"]
        qCores = q.get("gatewayCpu", 0)
        qPerCore = f"{q['roundTripsPerSecond'] / qCores:,.0f}" if qCores else "-"
        print(f"| {r['name']} | {t['roundTripsPerSecond']:,.0f} | {cores:.2f} | {perCore} |"
              f" {t.get('cpu0Busy', 0):.0%} / {t.get('cpu1Busy', 0):.0%} |"
              f" {q['roundTripsPerSecond']:,.0f} | {qCores:.2f} | {qPerCore} |"
              f" {q.get('cpu0Busy', 0):.0%} / {q.get('cpu1Busy', 0):.0%} | {spread} |"
              f" {r['connect']['connectsPerSecond']:,.0f} | {idle} | {after} |"
              f" {r['loadBefore']:.1f} / {r['loadAfter']:.1f} |")
    print()
    print("The load average counts every process on the machine: above the CPU count, other"
          " work competed with the gateway and the load generator, and the absolute rates"
          " are low; the rate per gateway CPU-second is the steadier figure.")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--warmup", type=float, default=1)
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--inflight", type=int, default=8)
    parser.add_argument("--connects", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=50)
    o = parser.parse_args(argv)
    if not os.path.isdir(os.path.join(BENCH, "node_modules", "ws")):
        raise SystemExit("bench/workers.py: run bench/setup.sh first (Node's ws in bench/node_modules)")
    scratch = tempfile.mkdtemp(prefix="txgateway-bench-workers-")
    redis, redisPort = startRedis(scratch)
    echo = compare.startEcho(scratch, compare.LOAD_CPU)
    results = []
    try:
        for name, workers, cpus, sessionMap in CONFIGS:
            result = measure(o, scratch, echo.port, redisPort, name, workers, cpus, sessionMap)
            print(json.dumps(result), flush=True)
            results.append(result)
    finally:
        echo.stop()
        redis.terminate()
        redis.wait(10)
        shutil.rmtree(scratch, ignore_errors=True)
    report(results, o)


if __name__ == "__main__":
    main()
