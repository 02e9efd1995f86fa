"""A real multi-node Ray cluster on 127.0.0.1 for the cluster tests: a head without CPUs and worker nodes, each node
its own process tree (tests/cluster/ray_node.py), killed by process-group id only; drivers are `curate` CLI calls."""

from __future__ import annotations

import json
import re
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
NODE_START_S = 120  # a node start on a loaded 2-core machine takes ~10-30 s


class Node:
    """One node's process (the leader of its own process group) and what it reported once up."""

    def __init__(self, proc: subprocess.Popen, info: dict, temp_dir: Path):
        self.proc, self.info, self.temp_dir = proc, info, temp_dir
        self.node_id, self.session_dir = info["node_id"], Path(info["session_dir"])

    def pids(self) -> set[int]:
        """Every live process of this node: its group and every descendant (a worker that left the group too)."""
        parents = _parents()
        pids = {pid for pid in parents if _pgid(pid) == self.proc.pid}
        grown = True
        while grown:
            children = {pid for pid, parent in parents.items() if parent in pids}
            grown = not children <= pids
            pids |= children
        return pids

    def kill(self) -> None:
        """SIGKILL every process of this node, as a machine that dies would lose them."""
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(timeout=30)


def _parents() -> dict[int, int]:
    """pid -> parent pid of every process, from /proc."""
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            out[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    return out


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except (ProcessLookupError, PermissionError):
        return None


class LoopbackCluster:
    """Head (num_cpus=0, so every task must run on a worker node) plus worker nodes, private temp dir and token."""

    def __init__(self, root: Path):
        self.root = root
        token = root / "auth_token"
        token.write_text(secrets.token_hex(32))
        # Own token (a token file shared with other clusters makes a joining node fail authentication) and own
        # RAY_TMPDIR (an address-less ray.init() elsewhere on the machine must not find and join this cluster).
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        # RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0: Ray otherwise rewrites a 127.0.0.1 address to the machine's outward one
        self.env.update(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token),
                        RAY_TMPDIR=str(root),
                        RAY_USAGE_STATS_ENABLED="0", HF_HUB_OFFLINE="1", NO_ALBUMENTATIONS_UPDATE="1",
                        PYTHONPATH=str(ROOT))
        self.nodes: list[Node] = []
        self.head = self.start_node(0, head=True)
        self.address = self.head.info["address"]

    def start_node(self, num_cpus: int, head: bool = False) -> Node:
        (node,) = self.start_nodes([num_cpus], head=head)
        return node

    def start_nodes(self, cpus: list[int], head: bool = False) -> list[Node]:
        """Start one node per entry of `cpus` (that many CPUs each), all at once, and wait until every one is up."""
        starting = []
        for num_cpus in cpus:
            name = "head" if head else f"worker{len(self.nodes) + len(starting)}"
            ready = self.root / f"{name}.json"
            cmd = [sys.executable, str(HERE / "ray_node.py"), "--ready", str(ready), "--num-cpus", str(num_cpus),
                   "--temp-dir", str(self.root / name)]
            cmd += ["--head"] if head else ["--address", self.address]
            log = open(self.root / f"{name}.log", "w")
            proc = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            starting.append((name, ready, proc))
        deadline = time.time() + NODE_START_S
        for name, ready, proc in starting:
            while not ready.exists():
                if proc.poll() is not None or time.time() > deadline:
                    for _, _, other in starting:
                        Node(other, {"node_id": "", "session_dir": ""}, self.root).kill()
                    raise RuntimeError(f"{name} did not start: {(self.root / f'{name}.log').read_text()[-3000:]}")
                time.sleep(0.2)
            self.nodes.append(Node(proc, json.loads(ready.read_text()), self.root / name))
        return self.nodes[-len(cpus):]

    def workers(self) -> list[Node]:
        return [n for n in self.nodes if n is not self.head and n.proc.poll() is None]

    def listening(self) -> list[str]:
        """Local address:port of every TCP listener of the cluster's processes, as `ss -ltnp` shows them."""
        pids = set().union(*(node.pids() for node in self.nodes))
        lines = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout.splitlines()
        return [line.split()[3] for line in lines if {int(p) for p in re.findall(r"pid=(\d+)", line)} & pids]

    def curate(self, *args, timeout: float = 180, **popen) -> subprocess.CompletedProcess:
        """Run the `curate` CLI as a driver of this cluster."""
        return subprocess.run(self.command(*args), env=self.driver_env(), capture_output=True, text=True,
                              timeout=timeout, **popen)

    def command(self, *args) -> list[str]:
        return [sys.executable, "-m", "curate.cli", *args, "--ray-address", self.address]

    def driver_env(self) -> dict:
        return dict(self.env)

    def stop(self) -> None:
        """SIGKILL every node's processes (no graceful drain: it waits up to 30 s per node and nothing is kept)."""
        for node in reversed(self.nodes):
            node.kill()


@pytest.fixture(scope="module")
def cluster():
    """Head + one 2-CPU worker node; the module's tests add and kill worker nodes. Every process is gone after."""
    # Ray's unix socket paths must stay under 107 bytes: a short private folder, not pytest's deep tmp path
    root = Path(tempfile.mkdtemp(prefix="rc"))
    c = LoopbackCluster(root)
    try:
        c.start_node(2)
        yield c
    finally:
        c.stop()
        shutil.rmtree(root, ignore_errors=True)
