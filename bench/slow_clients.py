#!/usr/bin/env python3
"""
How long slow, hoarding clients from one address keep everyone else out.

Starts C{twistd -n gateway} from a checkout (this one by default) with a
small C{limits.max_connections}, then, for each scenario, lets an attacker
on 127.0.0.1 hold as many connections as it can (reopening each one the
gateway closes) while a normal client on 127.0.0.2 asks the health probe
five times a second.  Prints, per scenario, the share of the normal
client's requests that failed and the longest run of failures.

Scenarios (each for C{--seconds}):
  - C{idle}: connections that send nothing;
  - C{head}: one kept-alive request, then a second head sent a byte every
    C{--interval} seconds;
  - C{body}: a long-polling POST whose body comes a byte every
    C{--interval} seconds.

  bench/slow_clients.py                                   # this checkout
  bench/slow_clients.py --per-ip 20                       # with max_connections_per_ip
  bench/slow_clients.py --checkout /path/to/older/checkout   # the same against older code

All traffic is on 127.0.0.1 and 127.0.0.2; every run is bounded by
C{--seconds}; the gateway is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ATTACKER, NORMAL = "127.0.0.1", "127.0.0.2"


def freePort() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def startGateway(checkout: str, scratch: str, options) -> tuple[subprocess.Popen, int]:
    port = freePort()
    config = os.path.join(scratch, "gateway.toml")
    with open(config, "w") as f:
        f.write(f"[timeouts]\nhandshake = {options.handshake}\n")
        f.write(f"[limits]\nmax_connections = {options.max_connections}\n")
        if options.per_ip is not None:
            f.write(f"max_connections_per_ip = {options.per_ip}\n")
        f.write('[[route]]\nprefix = "/chat"\npool = "p"\n'
                '[pool.p]\n[[pool.p.backend]]\nurl = "ws://127.0.0.1:9"\n')
    command = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n", "--pidfile=",
               "gateway", "--listen", f"tcp:{port}:interface=127.0.0.1", "--config", config]
    env = dict(os.environ, PYTHONPATH=checkout, PYTHONUNBUFFERED="1")
    log = open(os.path.join(scratch, "gateway.log"), "w")
    process = subprocess.Popen(command, cwd=checkout, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process, port
        except OSError:
            if process.poll() is not None:
                raise SystemExit(f"the gateway exited: see {log.name}")
            time.sleep(0.1)
    process.kill()
    raise SystemExit("the gateway did not start listening within 30 s")


def health(port: int, close: bool) -> bytes:
    return (b"GET /_gateway/health HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n%s\r\n"
            % (port, b"Connection: close\r\n" if close else b""))


async def hold(port: int, scenario: str, interval: float, until: float) -> None:
    """
    One attacker connection after another, for as long as the run lasts.
    """
    while time.monotonic() < until:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", port, local_addr=(ATTACKER, 0)), 2)
        except (OSError, asyncio.TimeoutError):
            await asyncio.sleep(0.05)
            continue
        try:
            if scenario == "head":
                writer.write(health(port, close=False))
                await asyncio.wait_for(reader.read(4096), 5)
                trickle = health(port, close=False) * 100
            elif scenario == "body":
                trickle = (b"POST /chat?txgw=open HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                           b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n")
                writer.write(trickle)
                trickle = b" " * 100000
            else:
                trickle = b""
            step = 0
            while time.monotonic() < until and not reader.at_eof():
                if trickle:
                    writer.write(trickle[step:step + 1])
                    step += 1
                try:
                    if await asyncio.wait_for(reader.read(4096), interval) == b"":
                        break
                except asyncio.TimeoutError:
                    pass
        except (OSError, asyncio.TimeoutError):
            pass
        finally:
            writer.close()
        await asyncio.sleep(0.5)  # then reopen: at most 2 connections a second per attacker task


async def probe(port: int, until: float) -> list[tuple[float, bool]]:
    """
    The normal client: a fresh connection and a health request every 0.2 s.
    """
    results = []
    while time.monotonic() < until:
        started = time.monotonic()
        ok = False
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", port, local_addr=(NORMAL, 0)), 2)
            writer.write(health(port, close=True))
            answer = await asyncio.wait_for(reader.read(4096), 2)
            ok = answer.startswith(b"HTTP/1.1 200 ")
            writer.close()
        except (OSError, asyncio.TimeoutError):
            pass
        results.append((started, ok))
        await asyncio.sleep(max(0.0, 0.2 - (time.monotonic() - started)))
    return results


async def scenario(port: int, name: str, options) -> tuple[float, float]:
    until = time.monotonic() + options.seconds
    attackers = [asyncio.ensure_future(hold(port, name, options.interval, until))
                 for _ in range(options.max_connections + 20)]
    await asyncio.sleep(min(3.0, options.seconds / 4))  # let the attacker fill the door
    results = await probe(port, until)
    await asyncio.gather(*attackers, return_exceptions=True)
    failed = sum(1 for _, ok in results if not ok)
    longest = streak = 0.0
    start = None
    for at, ok in results:
        if ok:
            start = None
            continue
        start = at if start is None else start
        streak = at - start + 0.2
        longest = max(longest, streak)
    return (failed / len(results) if results else 1.0), longest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkout", default=ROOT, help="the checkout whose gateway runs (default: this one)")
    parser.add_argument("--scenarios", default="idle,head,body")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each scenario")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between the attacker's bytes")
    parser.add_argument("--max-connections", type=int, default=200)
    parser.add_argument("--per-ip", type=int, default=None,
                        help="limits.max_connections_per_ip (left out of the file when not given)")
    parser.add_argument("--handshake", type=float, default=10.0, help="timeouts.handshake")
    options = parser.parse_args()
    print(f"machine: {platform.node()}, {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}")
    print(f"checkout: {options.checkout}; max_connections = {options.max_connections}, "
          f"max_connections_per_ip = {options.per_ip if options.per_ip is not None else 'not set'}, "
          f"handshake = {options.handshake} s; attacker byte every {options.interval} s; "
          f"{options.seconds} s per scenario")
    with tempfile.TemporaryDirectory() as scratch:
        for name in options.scenarios.split(","):
            process, port = startGateway(options.checkout, scratch, options)
            try:
                share, longest = asyncio.run(scenario(port, name, options))
            finally:
                process.kill()
                process.wait()
            print(f"{name:>5}: normal client refused or stalled for {100 * share:5.1f}% of requests; "
                  f"longest run {longest:5.1f} s")


if __name__ == "__main__":
    main()
