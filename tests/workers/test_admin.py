"""
Tests for L{gateway.workers.admin}: how the workers' answers are merged.
"""

from __future__ import annotations

from gateway.workers.admin import mergeAnswers


def test_countsSummed() -> None:
    """
    Connection and session counts are added up across workers, key by key
    and element by element; other values are the first worker's.
    """
    one = {"pools": [{"name": "chat", "backends": [
        {"name": "a", "weight": 2, "connections": 3, "draining": False, "limit": 10},
    ]}], "sessions": 4, "attached": 1, "mover": {"moving": 0}}
    two = {"pools": [{"name": "chat", "backends": [
        {"name": "a", "weight": 2, "connections": 5, "draining": False, "limit": 10},
    ]}], "sessions": 1, "attached": 1, "mover": {"moving": 7}}
    assert mergeAnswers([one, two]) == {"pools": [{"name": "chat", "backends": [
        {"name": "a", "weight": 2, "connections": 8, "draining": False, "limit": 10},
    ]}], "sessions": 5, "attached": 2, "mover": {"moving": 0}}


def test_unlikeShapes() -> None:
    """
    Arrays of different lengths, and values of different types, are the
    first worker's; booleans are never added up.
    """
    assert mergeAnswers([[1, 2], [1]]) == [1, 2]
    assert mergeAnswers([{"connections": True}, {"connections": True}]) == {"connections": True}
    assert mergeAnswers([{"connections": 1}, {"connections": "x"}]) == {"connections": 1}
    assert mergeAnswers([{"sessions": 1}]) == {"sessions": 1}
