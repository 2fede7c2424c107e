"""``ray`` CLI for the loopback test cluster (tests/ray_cluster.py): ``--node-ip-address=127.0.0.1`` is kept.

``ray start`` replaces a loopback node address with the machine's interface address
(``services.resolve_ip_for_localhost``), so the nodes would register, and be reached, on the network
interface. The cluster's processes run with ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, under which Ray
resolves loopback to loopback (its single-machine mode), and this wrapper re-allows a second node
joining (the check ``ray start --address`` makes in that mode). Nothing else changes.
"""

import sys

import ray._private.ray_constants as ray_constants
import ray._private.services as services
from ray.scripts.scripts import main

services.resolve_ip_for_localhost = lambda host: host
ray_constants.ENABLE_RAY_CLUSTER = True

if __name__ == "__main__":
    sys.exit(main())
