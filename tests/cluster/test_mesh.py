"""A 3-node mesh (every node --peer every node, plaintext on loopback) passes
the shared delivery tests (delivery.py): one ordered stream for every
subscriber on every node under concurrent publishes from all nodes, HTTP
publishes, interest routing on the metrics, exact topics, unsub/disconnect
propagation, resubscribing after leaving.

Run: PYTHONPATH=tests/lib /usr/bin/python3 tests/cluster/test_mesh.py
(CHORUSD=build/broker/chorusd).
"""

import sys
sys.dont_write_bytecode = True  # no __pycache__ in the source tree

import delivery
from cluster_common import H, filter_tests, make_mesh

NODES = make_mesh(3, prefix="mesh-")

if __name__ == "__main__":
    delivery.use(NODES)
    delivery.register()
    filter_tests()
    H.main(servers=NODES)
