"""
The pytest plugin's own fixtures work as the README says: a real
redis-server that can be killed and restarted on its port.
"""

from __future__ import annotations

import pytest_twisted

from gateway.testing import rawExchange


@pytest_twisted.ensureDeferred
async def test_redis_server_fixture(redis_server):
    """
    The session's redis-server answers PING on its port.
    """
    answer = await rawExchange(redis_server.port, b"PING\r\nQUIT\r\n")
    assert answer == b"+PONG\r\n+OK\r\n"


@pytest_twisted.ensureDeferred
async def test_private_redis_killed_and_restarted(make_redis_server):
    """
    A private redis-server can be killed (SIGKILL) and started again on the
    same port, empty.
    """
    server = make_redis_server()
    port = server.port
    assert await rawExchange(port, b"SET k v\r\nQUIT\r\n") == b"+OK\r\n+OK\r\n"
    server.kill()
    server.start()
    assert server.port == port
    assert await rawExchange(port, b"GET k\r\nQUIT\r\n") == b"$-1\r\n+OK\r\n"
