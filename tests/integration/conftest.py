"""
Fixtures the integration tests share beyond C{gateway.testing}'s: headless
Chromium and a WebSocket-breaking nginx (L{tests.integration.browser}), and
a python-socketio server process.
"""

import pytest_twisted

from .browser import browser, make_nginx  # noqa: F401 (fixtures)
from .helpers import startSocketIOServer


@pytest_twisted.async_yield_fixture
async def socketio_server():
    """
    A python-socketio server process; yields its port.
    """
    process = await startSocketIOServer("python")
    yield int(process.match.group(1))
    process.signal("KILL")
    try:
        await process.wait(10)
    except Exception:
        pass
