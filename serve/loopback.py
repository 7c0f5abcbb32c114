"""Keep a replica's own gRPC server on loopback when the node it runs on is a loopback node.

Ray Serve 2.60 starts an inter-deployment gRPC server in every replica on `[::]:0`, all
interfaces, whatever the node's address (`ray/serve/_private/replica.py`, `_on_initialized`);
no setting changes it. On our local clusters and `benchmatch serve`'s private Ray, every node's
address is 127.0.0.1, and callers reach the replica at that address, so binding the server there
changes nothing for them and closes the one port that was open to the network. On a real
multi-node cluster (a node IP that is not loopback) nothing is changed.
"""

from __future__ import annotations

LOOPBACK = ("127.0.0.1", "::1")


def keep_replica_grpc_on_loopback() -> bool:
    """Patch this replica process before its gRPC server starts; True when it was patched."""
    import ray

    try:
        from ray.serve._private import replica as replica_module
    except ImportError:  # a Ray without this module: nothing to patch
        return False
    ip = ray.util.get_node_ip_address()
    original = getattr(replica_module, "add_port_to_grpc_server", None)
    if ip not in LOOPBACK or original is None or getattr(original, "_benchmatch_loopback", False):
        return False
    host = f"[{ip}]" if ":" in ip else ip

    def bind_to_the_node(server: object, address: str) -> int:
        if address.startswith("[::]:"):
            address = f"{host}:{address[len('[::]:'):]}"
        return original(server, address)

    bind_to_the_node._benchmatch_loopback = True  # type: ignore[attr-defined]
    replica_module.add_port_to_grpc_server = bind_to_the_node
    return True
