"""One Ray node (head or worker) on 127.0.0.1, in the foreground until terminated: the test cluster's building block.

Run as `python ray_node.py --ready FILE [--head | --address GCS] --num-cpus N --temp-dir DIR`. `ray start` cannot be
used here: with multi-node switched on it rewrites --node-ip-address 127.0.0.1 to the machine's outward address, and
with it switched off it refuses to join a head. Ray's own node class (what ray.cluster_utils builds on) takes the
loopback address as given, and with multi-node off every port binds loopback only. Each node runs in its own process
group, so a test can kill one node's every process by that group's id."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ready", required=True, help="file written with the node's address and ids once it is up")
    parser.add_argument("--head", action="store_true")
    parser.add_argument("--address", help="the head's GCS address (worker nodes)")
    parser.add_argument("--num-cpus", type=int, required=True)
    parser.add_argument("--temp-dir", required=True)
    args = parser.parse_args()
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # loopback only, read when ray is first imported
    from ray._private.node import Node
    from ray._private.parameter import RayParams

    params = RayParams(node_ip_address="127.0.0.1", num_cpus=args.num_cpus, num_gpus=0, temp_dir=args.temp_dir,
                       object_store_memory=100 << 20, min_worker_port=0, max_worker_port=0, include_dashboard=False)
    if not args.head:
        params.update(gcs_address=args.address, node_manager_port=0, include_log_monitor=False)
    # shutdown_at_exit: SIGTERM -> sys.exit -> Ray's atexit hook stops this node's processes
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    node = Node(params, head=args.head, shutdown_at_exit=True, spawn_reaper=True)
    info = {"address": node.gcs_address, "node_id": node.node_id, "session_dir": node.get_session_dir_path(),
            "pid": os.getpid()}
    tmp = args.ready + ".tmp"
    with open(tmp, "w") as f:
        json.dump(info, f)
    os.rename(tmp, args.ready)
    while True:
        signal.pause()


if __name__ == "__main__":
    main()
