"""
Find balancers and session maps by name.

This is the one place that calls L{twisted.plugin.getPlugins}: every
implementation, built-in or third-party, is a drop-in in the top-level
C{plugins} package (see its docstring), looked up here by the name the
configuration gives, as L{twisted.cred.strcred.findCheckerFactory} does for
checkers.
"""

from __future__ import annotations

from twisted.plugin import getPlugins

from .errors import ConfigError, UnknownPlugin
from .interfaces import IBalancerFactory, ISessionMapFactory

__all__ = [
    "findBalancerFactory",
    "findSessionMapFactory",
    "balancerNames",
    "sessionMapNames",
]


def _factories(interface) -> list:
    """
    @return: every drop-in in the C{plugins} package that provides
        C{interface}.
    """
    import plugins

    return list(getPlugins(interface, plugins))


def _find(interface, kind: str, name: str):
    """
    @param kind: what is looked for, for messages (C{"balancer"}).
    @return: the one plugin providing C{interface} called C{name}.
    @raise UnknownPlugin: when none is called C{name}.
    @raise ConfigError: when several are.
    """
    factories = _factories(interface)
    found = [f for f in factories if f.name == name]
    if not found:
        known = ", ".join(sorted({f.name for f in factories})) or "none"
        raise UnknownPlugin(f"unknown {kind} {name!r} (known: {known})")
    if len(found) > 1:
        raise ConfigError(
            f"{kind} {name!r} is provided by {len(found)} plugins;"
            " keep one of them in plugins/"
        )
    return found[0]


def findBalancerFactory(name: str) -> IBalancerFactory:
    """
    @param name: a balancer name from the configuration, e.g. C{"least_conn"}.
    @return: the balancer factory called C{name}.
    @raise UnknownPlugin: naming the known balancers, when there is none.
    """
    return _find(IBalancerFactory, "balancer", name)


def findSessionMapFactory(name: str) -> ISessionMapFactory:
    """
    @param name: a session map type from the configuration, e.g.
        C{"memory"}.
    @return: the session map factory called C{name}.
    @raise UnknownPlugin: naming the known session maps, when there is none.
    """
    return _find(ISessionMapFactory, "session map", name)


def balancerNames() -> list[str]:
    """
    @return: the names of every balancer, sorted.
    """
    return sorted({f.name for f in _factories(IBalancerFactory)})


def sessionMapNames() -> list[str]:
    """
    @return: the names of every session map, sorted.
    """
    return sorted({f.name for f in _factories(ISessionMapFactory)})
