"""
The built-in balancers, as drop-ins: C{least_conn}, C{round_robin} and
C{hash}.
"""

from gateway.backends.balancers import (
    BalancerFactory,
    LeastConnections,
    RendezvousHash,
    RoundRobin,
)

leastConnections = BalancerFactory(
    "least_conn",
    "fewest connections per weight; ties rotate",
    LeastConnections,
)

roundRobin = BalancerFactory(
    "round_robin",
    "smooth weighted round robin (nginx's algorithm)",
    RoundRobin,
)

rendezvousHash = BalancerFactory(
    "hash",
    "weighted rendezvous hashing on the affinity key or client address",
    RendezvousHash,
)
