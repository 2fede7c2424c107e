"""A real multi-node Ray cluster on loopback for tests: every node a separate ``ray start --block``
(its own raylet, object store and CPU count), all bound to 127.0.0.1 on ports picked here.

``ray.cluster_utils.Cluster`` binds the machine's interface address, so it does not fit a loopback-only
machine. Each node's ``ray start --block`` stays in the foreground as our child; the processes it
starts (GCS, raylet, dashboard, workers) are its descendants. Their PIDs are recorded while the
cluster runs and :meth:`LoopbackRayCluster.stop` terminates exactly those PIDs, nothing else.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
"""With it "0", Ray keeps 127.0.0.1 as 127.0.0.1 (every process of the cluster and its drivers; see ray_node.py)."""
RAY_CLI = [sys.executable, str(Path(__file__).with_name("ray_node.py"))]  # `ray`, node address kept as given


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_port_range(width: int, tries: int = 200) -> int:
    """A base port whose next ``width`` ports are all free on 127.0.0.1 right now."""
    import random

    rng = random.Random(os.getpid() ^ time.time_ns())
    for _ in range(tries):
        base = rng.randrange(20000, 60000 - width)
        socks = []
        try:
            for p in range(base, base + width):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port range")


class LoopbackRayCluster:
    """``nodes`` Ray nodes on this machine (``cpus_per_node`` CPUs each), head first."""

    def __init__(self, nodes: int = 2, cpus_per_node: int = 1, object_store_mb: int = 400,
                 env: dict | None = None, gpus_per_node: int = 0) -> None:
        self.n_nodes, self.cpus, self.store_mb, self.gpus = nodes, cpus_per_node, object_store_mb, gpus_per_node
        self.env = {**os.environ, **(env or {}), "RAY_USAGE_STATS_ENABLED": "0", LOOPBACK_ENV: "0"}
        self.env.pop("RAY_ADDRESS", None)
        self.env.pop("CLUSTERMINE_RAY_ADDRESS", None)
        self.port = free_port()
        self.dashboard_port = free_port()
        self.temp_dir = Path(tempfile.mkdtemp(prefix="cmray-", dir="/tmp"))  # short: Unix socket paths
        self.procs: list[subprocess.Popen] = []
        self.logs: list[Path] = []
        self.known: dict[int, float] = {}  # pid -> create_time of every process the nodes started

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def _node_args(self, head: bool) -> list[str]:
        workers = free_port_range(40)
        args = [*RAY_CLI, "start", "--block", "--node-ip-address=127.0.0.1", f"--num-cpus={self.cpus}",
                f"--num-gpus={self.gpus}", f"--object-store-memory={self.store_mb * 2**20}", "--disable-usage-stats",
                f"--node-manager-port={free_port()}", f"--object-manager-port={free_port()}",
                f"--metrics-export-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
                f"--dashboard-agent-grpc-port={free_port()}", f"--runtime-env-agent-port={free_port()}",
                f"--min-worker-port={workers}", f"--max-worker-port={workers + 39}"]
        if head:
            args += ["--head", f"--port={self.port}", "--dashboard-host=127.0.0.1",
                     f"--dashboard-port={self.dashboard_port}", f"--ray-client-server-port={free_port()}",
                     f"--temp-dir={self.temp_dir}", "--include-dashboard=true"]
        else:
            args += [f"--address={self.address}"]
        return args

    def start(self, timeout: float = 180.0) -> "LoopbackRayCluster":
        try:
            for i in range(self.n_nodes):
                log = self.temp_dir / f"node{i}.log"
                self.logs.append(log)
                with open(log, "wb") as fh:
                    self.procs.append(subprocess.Popen(self._node_args(head=i == 0), stdout=fh, stderr=subprocess.STDOUT,
                                                       env=self.env, start_new_session=True))
                self._wait_nodes(i + 1, timeout)
        except BaseException:
            self.stop()
            raise
        self.record()
        return self

    def _wait_nodes(self, n: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for p, log in zip(self.procs, self.logs):
                if p.poll() is not None:
                    raise RuntimeError(f"ray node exited early ({p.returncode}):\n{log.read_text(errors='replace')[-3000:]}")
            self.record()
            if self.alive_nodes() >= n:
                return
            time.sleep(1.0)
        raise RuntimeError(f"{n} Ray node(s) not up after {timeout:.0f} s:\n"
                           + "\n".join(log.read_text(errors="replace")[-2000:] for log in self.logs))

    def alive_nodes(self) -> int:
        """Alive nodes as the GCS sees them (a short-lived driver in a subprocess)."""
        code = ("import ray,sys; ray.init(address=sys.argv[1], logging_level='ERROR', log_to_driver=False); "
                "print(sum(1 for n in ray.nodes() if n['Alive'])); ray.shutdown()")
        try:
            out = subprocess.run([sys.executable, "-c", code, self.address], capture_output=True, text=True,
                                 timeout=60, env=self.env)
        except subprocess.TimeoutExpired:
            return 0
        try:
            return int(out.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return 0

    def record(self) -> None:
        """Remember every process the nodes have started so far (stop() kills exactly these)."""
        for p in self.procs:
            try:
                root = psutil.Process(p.pid)
                for q in [root, *root.children(recursive=True)]:
                    self.known.setdefault(q.pid, q.create_time())
            except psutil.NoSuchProcess:
                continue

    def node_processes(self, index: int, name: str) -> list[psutil.Process]:
        """Live processes called ``name`` (e.g. ``raylet``) under node ``index``."""
        try:
            root = psutil.Process(self.procs[index].pid)
            return [q for q in root.children(recursive=True) if q.name() == name]
        except psutil.NoSuchProcess:
            return []

    def kill_node(self, index: int) -> None:
        """SIGKILL node ``index``'s raylet (a node failure as Ray sees one)."""
        self.record()
        for q in self.node_processes(index, "raylet"):
            q.kill()

    def _ours(self) -> list[psutil.Process]:
        out = []
        for pid, created in self.known.items():
            try:
                q = psutil.Process(pid)
                if abs(q.create_time() - created) < 0.05:
                    out.append(q)
            except psutil.NoSuchProcess:
                continue
        return out

    def stop(self, grace: float = 15.0) -> None:
        self.record()
        procs = self._ours()
        for q in procs:
            try:
                q.send_signal(signal.SIGTERM)
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(procs, timeout=grace)
        for q in alive:
            try:
                q.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(alive, timeout=5)
        for p in self.procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def __enter__(self) -> "LoopbackRayCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
