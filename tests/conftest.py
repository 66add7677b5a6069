"""
The project's own tests use the fixtures its pytest plugin ships
(L{gateway.testing}); when the package is not installed (a bare checkout),
load the plugin from the checkout.
"""

from importlib.metadata import PackageNotFoundError, entry_points

try:
    _installed = any(ep.value == "gateway.testing" for ep in entry_points(group="pytest11"))
except PackageNotFoundError:  # pragma: no cover
    _installed = False

pytest_plugins = [] if _installed else ["gateway.testing"]
