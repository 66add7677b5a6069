"""
Fixtures of the client's test modules: a L{Harness} per transport mode, and
the log of a test.
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.logger import formatEvent, globalLogPublisher

from .fakes import Harness


@pytest.fixture
def h() -> Harness:
    return Harness()



@pytest.fixture
def p() -> Harness:
    return Harness(transport="polling")



@pytest.fixture
def a() -> Harness:
    return Harness(transport="auto")



@pytest.fixture
def logged() -> Any:
    """
    Every log event emitted during the test, formatted.
    """
    events: list[str] = []

    def observe(event: dict) -> None:
        text = formatEvent(event)
        if "log_failure" in event:
            text += event["log_failure"].getTraceback()
        events.append(text)

    globalLogPublisher.addObserver(observe)
    yield events
    globalLogPublisher.removeObserver(observe)

