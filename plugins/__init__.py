"""
Drop-ins for the gateway's extension points, found by L{gateway.dropins}.

Every module in this package (and in any other C{plugins} directory on
C{sys.path} without an C{__init__.py}, as with C{twisted/plugins/}) is
scanned by L{twisted.plugin.getPlugins}; every module-level object that
provides L{twisted.plugin.IPlugin} and one of the gateway's factory
interfaces is a plugin, known by its C{name} attribute.

To add a balancer, a third party ships a module, say
C{plugins/acme_balancers.py}, next to its own packages (it must not ship
an C{__init__.py} here)::

    from gateway.backends.balancers import BalancerFactory
    from acme.balancing import RandomTwo  # provides gateway.interfaces.IBalancer

    randomTwo = BalancerFactory("random_two", "power of two random choices", RandomTwo)

A session map is added the same way, with an object that provides
L{twisted.plugin.IPlugin} and L{gateway.interfaces.ISessionMapFactory}
(C{name}, C{description} and C{__call__(options, reactor)}); see
C{gateway_sessionmaps.py}.  The configuration then names it
(C{balance = "random_two"}, C{[session_map] type = "..."}).

Keep drop-in modules light: they are imported to build the plugin cache,
and an import error there only shows as an unknown name.
"""

from twisted.plugin import pluginPackagePaths

__path__.extend(pluginPackagePaths(__name__))
__all__: list[str] = []
