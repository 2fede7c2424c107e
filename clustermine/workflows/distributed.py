"""Scale-out on a Ray cluster: encode, vote and score where one machine is not enough.

Optional. Nothing outside this module imports Ray, and this module imports it only inside
:meth:`RayCluster.connect`, so the default (embedded) path never loads it. The CLI's ``--ray ADDRESS``
(or ``CLUSTERMINE_RAY_ADDRESS``) and the web app's job worker are the only callers.

What runs where:

* **the driver** (this process) keeps the run directory: it lists the folder (names, sizes, skip rules;
  the files' bytes are read and hashed by Ray tasks, :meth:`RayCluster.hash_files`), consults the
  content-addressed feature cache, writes every feature shard (cache chunk) as results stream back,
  clusters (TEMI / k-means, one GPU at most) and writes votes and scores;
* **encoding** is a Ray Data pipeline: rows ``(pos, path)`` -> decode + preprocess tasks (CPU; the same
  :func:`clustermine.method.encoders.decode.load_item` as the local path, so skip reasons are identical) ->
  encoder actors (the encoder loaded once per actor; ``num_gpus=1`` each when the cluster has GPUs) ->
  back to the driver. Workers read the images from the paths the driver lists, so the folder must be
  visible under the same path on every node (shared filesystem);
* **vote and score** are Ray tasks over row blocks of the features; the corpus embeddings (or the
  detector) go into the object store once.

A re-run after a failure re-encodes only images whose features are not in the cache yet: every chunk
that reached the driver was stored as a shard before the failure.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from clustermine.core.errors import CancelledError, ClusterMineError, EncoderError
from clustermine.method.mining import zero_shot_topk
from clustermine.method.images import DEFAULT_MAX_PIXELS, hash_or_reason
from clustermine.method.encoders import load_encoder

RAY_ADDRESS_ENV = "CLUSTERMINE_RAY_ADDRESS"
"""Environment variable naming the default cluster (``auto``, ``host:port`` or ``ray://host:port``)."""

RAY_PIN = "ray[default,data]==2.60.0"
"""The pinned Ray distribution (requirements.txt); every node and the driver need the same version."""

VOTE_BLOCK = 16_384
"""Images per vote / score task: 16K x 384 float16 features = 12 MB in, top-k + LSE out."""

HASH_BLOCK = 512
"""Files per hashing task of the scan."""

MAX_BLOCKS = 2000
"""Upper bound of the encode pipeline's input blocks (each a few batches of paths)."""

_DISABLED = {"", "0", "off", "none", "no", "false", "local"}


class RayClusterError(ClusterMineError):
    """Ray is not installed, the cluster cannot be reached, or a cluster job failed."""


def ray_address(explicit: str | None = None) -> str | None:
    """The cluster to use: ``explicit`` (the ``--ray`` option) else ``$CLUSTERMINE_RAY_ADDRESS``;
    None (run locally) when neither is set or the value is ``off`` / ``local`` / empty."""
    value = explicit if explicit is not None else os.environ.get(RAY_ADDRESS_ENV)
    if value is None or value.strip().lower() in _DISABLED:
        return None
    return value.strip()


@dataclass
class NodeInfo:
    """One alive node of the cluster: its Ray id, address and logical resources."""

    node_id: str
    address: str
    cpus: float
    gpus: float
    is_head: bool = False


@dataclass
class ClusterInfo:
    """What the cluster offers: alive nodes, total CPUs / GPUs, and how long connecting took (s)."""

    address: str
    nodes: list[NodeInfo] = field(default_factory=list)
    connect_s: float = 0.0

    @property
    def cpus(self) -> float:
        return float(sum(n.cpus for n in self.nodes))

    @property
    def gpus(self) -> float:
        return float(sum(n.gpus for n in self.nodes))

    def describe(self) -> str:
        """One line for logs and the web app, e.g. ``2 nodes, 2 CPUs, 0 GPUs at 127.0.0.1:6379``."""
        return (f"{len(self.nodes)} node{'s' if len(self.nodes) != 1 else ''}, {self.cpus:g} CPUs, "
                f"{self.gpus:g} GPUs at {self.address}")

    def to_dict(self) -> dict:
        return {"address": self.address, "cpus": self.cpus, "gpus": self.gpus, "connect_s": round(self.connect_s, 3),
                "nodes": [vars(n) for n in self.nodes]}


@dataclass
class EncodePlan:
    """How the encode pipeline uses the cluster: ``actors`` encoder actors with ``actor_cpus`` /
    ``actor_gpus`` each (``device`` theirs), decode tasks with ``decode_cpus`` each."""

    actors: int
    actor_cpus: float
    actor_gpus: float
    decode_cpus: float
    device: str
    threads: int = 1

    @classmethod
    def for_cluster(cls, info: ClusterInfo, actors: int | None = None) -> "EncodePlan":
        """GPUs: one actor per GPU (1 CPU, 2 torch threads each), decode tasks take 1 CPU. CPU only: one
        actor per node holding half of the smallest node's CPUs (as many torch threads), decode tasks 1 CPU.
        Nodes with a single CPU: actors hold a quarter CPU and decode tasks half (logical shares; the
        actor runs one torch thread), so such a node runs an actor and a decode task, and still does
        when a lost node's actor is restarted beside it (an actor holding the whole CPU would starve the
        decode tasks feeding it)."""
        if info.gpus >= 1:
            n = actors or int(info.gpus)
            return cls(actors=max(1, n), actor_cpus=1.0, actor_gpus=1.0, decode_cpus=1.0, device="cuda", threads=2)
        cpu_nodes = [node.cpus for node in info.nodes if node.cpus >= 1]
        n = actors or max(1, len(cpu_nodes))
        smallest = int(min(cpu_nodes, default=1))
        if smallest >= 2:  # half of each node's CPUs for the model (torch threads), the rest decodes
            half = smallest // 2
            return cls(actors=max(1, n), actor_cpus=float(half), actor_gpus=0.0, decode_cpus=1.0, device="cpu",
                       threads=half)
        return cls(actors=max(1, n), actor_cpus=0.25, actor_gpus=0.0, decode_cpus=0.5, device="cpu", threads=1)


LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


def _import_ray(address: str = ""):
    """Import Ray; for a cluster on this machine's loopback (``127.0.0.1:PORT``) keep the driver on loopback.

    Ray otherwise swaps a loopback address for the machine's interface address, which a cluster bound to
    127.0.0.1 does not listen on; its single-machine switch (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``) keeps
    loopback as it is and must be in place before Ray reads its constants.
    """
    host = address.split("://", 1)[-1].rpartition(":")[0].strip("[]")
    if host in LOOPBACK_HOSTS:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
    except ImportError as exc:
        raise RayClusterError(
            f"Ray is not installed in this environment ({exc}); install it with "
            f"`pip install '{RAY_PIN}'` (the same version on every node), or run without --ray") from None
    if host in LOOPBACK_HOSTS and os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER") == "0":
        import ray._private.ray_constants as ray_constants

        ray_constants.ENABLE_RAY_CLUSTER = False  # Ray was imported before the switch was set
    return ray


class RayCluster:
    """A connection to a running Ray cluster (context manager; disconnects on exit).

    ``address``: ``auto`` (the cluster this machine belongs to), ``host:port`` of the head's GCS, or
    ``ray://host:10001`` (Ray Client). Connecting never starts a cluster: the cluster is the user's.
    """

    def __init__(self, address: str, *, log_to_driver: bool = False) -> None:
        self.address = address
        self.log_to_driver = log_to_driver
        self._ray = None
        self.info: ClusterInfo | None = None
        self._remote: dict[str, Any] = {}

    # ---- connection -------------------------------------------------------------------------
    def connect(self) -> ClusterInfo:
        ray = _import_ray(self.address)
        start = time.perf_counter()
        if not ray.is_initialized():
            _check_reachable(self.address)
            try:
                ray.init(address=self.address, log_to_driver=self.log_to_driver, logging_level="ERROR",
                         configure_logging=True, namespace="clustermine")
            except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
                raise _unreachable(self.address, exc) from None
        self._ray = ray
        try:  # Ray Data's console progress bars and per-dataset INFO lines would interleave with ours
            import logging

            import ray.data

            ctx = ray.data.DataContext.get_current()
            ctx.enable_progress_bars = False
            ctx.verbose_progress = False
            logging.getLogger("ray.data").setLevel(logging.WARNING)
        except AttributeError:
            pass
        self.info = self._describe(time.perf_counter() - start)
        if not self.info.nodes:
            raise RayClusterError(f"the Ray cluster at {self.address!r} has no alive node")
        return self.info

    def _describe(self, connect_s: float) -> ClusterInfo:
        head = None
        try:
            head = self._ray.get_runtime_context().gcs_address
        except AttributeError:
            pass
        nodes = []
        for n in self._ray.nodes():
            if not n.get("Alive"):
                continue
            res = n.get("Resources", {})
            nodes.append(NodeInfo(node_id=n["NodeID"], address=f"{n.get('NodeManagerAddress')}",
                                  cpus=float(res.get("CPU", 0)), gpus=float(res.get("GPU", 0)),
                                  is_head="node:__internal_head__" in res))
        return ClusterInfo(address=head or self.address, nodes=nodes, connect_s=connect_s)

    def close(self) -> None:
        """Disconnect (the job's tasks and actors end with it; the cluster keeps running)."""
        if self._ray is not None and self._ray.is_initialized():
            self._ray.shutdown()
        self._ray = None

    def __enter__(self) -> "RayCluster":
        self.connect()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def ray(self):
        if self._ray is None:
            self.connect()
        return self._ray

    # ---- encoding ---------------------------------------------------------------------------
    def iter_encode(self, encoder, paths: Sequence[str], *, chunk_size: int = 256, batch_size: int = 32,
                    max_pixels: int | None = None, progress: Callable[[int, int], None] | None = None,
                    cancel: Callable[[], bool] | None = None, plan: EncodePlan | None = None,
                    ) -> Iterator[tuple[np.ndarray, Any]]:
        """Encode ``paths`` on the cluster, yielding ``(positions int64 [k], EncodeResult)`` for chunks of
        about ``chunk_size`` images as they come back (positions index ``paths``; chunks arrive in no
        particular order). ``encoder`` is the driver's encoder: the actors load the same spec and must
        have the same fingerprint. Cancel raises CancelledError (the pipeline is stopped)."""
        from clustermine.method.encoders.base import EncodeResult  # imports torch (seconds): only when this runs

        ray = self.ray
        names = [os.fspath(p) for p in paths]
        if not names:
            return
        plan = plan or EncodePlan.for_cluster(self.info or self._describe(0.0))
        transform = encoder.image_transform()
        pixel_shape = _pixel_shape(transform)
        batch_size = max(1, int(batch_size))
        items = [{"pos": i, "path": p} for i, p in enumerate(names)]
        # Blocks of whole batches, at most ~MAX_BLOCKS of them (per-block overhead at 10M images).
        per_block = batch_size * max(1, math.ceil(len(items) / (batch_size * MAX_BLOCKS)))
        n_blocks = max(1, math.ceil(len(items) / per_block))
        ds = ray.data.from_items(items, override_num_blocks=n_blocks)
        ds = ds.map_batches(decode_batch, batch_size=batch_size, batch_format="numpy", num_cpus=plan.decode_cpus,
                            fn_kwargs={"transform": transform, "max_pixels": max_pixels or DEFAULT_MAX_PIXELS,
                                       "pixel_shape": pixel_shape})
        # Ray Data spreads tasks and actors over the nodes itself (its default scheduling strategy).
        ds = ds.map_batches(EncoderActor, batch_size=batch_size, batch_format="numpy",
                            compute=ray.data.ActorPoolStrategy(size=min(plan.actors, n_blocks)),
                            num_cpus=plan.actor_cpus, num_gpus=plan.actor_gpus,
                            fn_constructor_kwargs={"spec": encoder.spec, "device": plan.device,
                                                   "fingerprint_id": encoder.fingerprint_id,
                                                   "threads": plan.threads})
        done, pending = 0, []
        try:
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=1):
                if cancel is not None and cancel():
                    raise CancelledError(f"encoding cancelled after {done} of {len(names)} images")
                pending.append(batch)
                done += len(batch["pos"])
                if sum(len(b["pos"]) for b in pending) >= chunk_size:
                    yield _chunk(pending, names, EncodeResult)  # stored by the caller before anything can stop us
                    pending = []
                if progress is not None:
                    progress(done, len(names))
            if pending:
                yield _chunk(pending, names, EncodeResult)
        except CancelledError:
            raise
        except ClusterMineError:
            raise
        except Exception as exc:  # a task or actor failed beyond Ray's retries
            raise RayClusterError(
                f"the Ray encode job failed after {done} of {len(names)} images ({type(exc).__name__}: "
                f"{_short(exc)}); features already returned are stored, re-run to continue") from exc

    # ---- vote / score -----------------------------------------------------------------------
    def _task(self, name: str, fn: Callable) -> Any:
        if name not in self._remote:
            self._remote[name] = self.ray.remote(num_cpus=1, max_retries=3)(fn)
        return self._remote[name]

    def hash_files(self, paths: list[str], block: int = HASH_BLOCK) -> list[tuple[str | None, str | None]]:
        """:func:`clustermine.method.images.hash_or_reason` of every path, read and hashed by Ray tasks (the scan's
        sha1s: the bytes are read where the tasks run, not by the driver); results in ``paths`` order."""
        parts = self.map_blocks(hash_block, paths, None, block=block, as_float32=False)
        return [h for p in parts for h in p]

    def map_blocks(self, fn: Callable, features: Any, shared: Any, *, block: int = VOTE_BLOCK,
                   progress: Callable[[int, int], None] | None = None, cancel: Callable[[], bool] | None = None,
                   as_float32: bool = True, **kwargs) -> list:
        """``fn(features[lo:hi] as float32, shared, **kwargs)`` as Ray tasks over row blocks, ``shared``
        put in the object store once; results in block order. At most two tasks per CPU in flight, so
        the driver reads (and ships) blocks no faster than the cluster uses them. ``as_float32`` False:
        ``features`` is any sequence, its slices shipped as they are."""
        ray = self.ray
        n = len(features)
        task = self._task(fn.__name__, fn)
        shared_ref = ray.put(shared)
        cpus = max(1, int(self.info.cpus if self.info else 2))
        limit = 2 * cpus
        block = max(1, min(block, math.ceil(n / cpus)))  # a small job still uses every CPU
        bounds = [(lo, min(lo + block, n)) for lo in range(0, n, block)]
        results: list = [None] * len(bounds)
        in_flight: dict = {}
        done_rows, nxt = 0, 0
        try:
            while nxt < len(bounds) or in_flight:
                while nxt < len(bounds) and len(in_flight) < limit:
                    lo, hi = bounds[nxt]
                    part = np.asarray(features[lo:hi], dtype=np.float32) if as_float32 else features[lo:hi]
                    ref = task.remote(part, shared_ref, **kwargs)
                    in_flight[ref] = nxt
                    nxt += 1
                ready, _ = ray.wait(list(in_flight), num_returns=1)
                for ref in ready:
                    i = in_flight.pop(ref)
                    results[i] = ray.get(ref)
                    done_rows += bounds[i][1] - bounds[i][0]
                    if progress is not None:
                        progress(done_rows, n)
                if cancel is not None and cancel():
                    raise CancelledError(f"cancelled after {done_rows} of {n} images")
        except (CancelledError, ClusterMineError):
            for ref in in_flight:
                ray.cancel(ref, force=True)
            raise
        except Exception as exc:
            raise RayClusterError(f"a Ray task failed ({type(exc).__name__}: {_short(exc)})") from exc
        return results

    def zero_shot_topk(self, features: np.ndarray, text_embeddings: np.ndarray, *, k: int, tau: float,
                       progress: Callable[[int, int], None] | None = None,
                       cancel: Callable[[], bool] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:func:`clustermine.method.mining.zero_shot_topk` on the cluster: (top_idx int [N, k], top_sim [N, k],
        corpus LSE float64 [N]), the corpus embeddings shipped once."""
        parts = self.map_blocks(vote_block, features, np.asarray(text_embeddings, dtype=np.float32),
                                progress=progress, cancel=cancel, k=k, tau=tau)
        if not parts:
            return (np.zeros((0, k), np.int64), np.zeros((0, k), np.float32), np.zeros(0, np.float64))
        return tuple(np.concatenate([p[i] for p in parts]) for i in range(3))  # type: ignore[return-value]

    def explain(self, detector, features: np.ndarray, *, top: int = 5) -> list[dict]:
        """``detector.explain(features, top)`` on the cluster (the detector shipped once)."""
        parts = self.map_blocks(explain_block, features, detector, top=top)
        return [e for p in parts for e in p]

    def log_scores(self, detector, features: np.ndarray) -> np.ndarray:
        """``detector.log_scores(features)`` float64 [N] on the cluster."""
        parts = self.map_blocks(log_score_block, features, detector)
        return np.concatenate(parts) if parts else np.zeros(0, np.float64)


def query_cluster(address: str, timeout: float = 90.0) -> dict:
    """:meth:`ClusterInfo.to_dict` of the cluster at ``address``, asked by a short-lived
    ``clustermine cluster --json`` process, so the caller (the web server) never becomes a Ray driver
    nor imports Ray. Raises RayClusterError with the child's message when it cannot connect."""
    import json
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "clustermine", "cluster", "--json", "--ray", address]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise RayClusterError(f"the Ray cluster at {address!r} did not answer within {timeout:.0f} s") from None
    if out.returncode != 0:
        lines = [ln for ln in out.stderr.strip().splitlines() if ln.strip()]
        msg = lines[-1] if lines else f"exit code {out.returncode}"
        raise RayClusterError(msg.removeprefix("error: "))
    return json.loads(out.stdout)


# ---- functions run on the workers (module level: shipped by reference, imported there) ------------

def decode_batch(batch: dict, transform: Callable, max_pixels: int, pixel_shape: tuple[int, ...]) -> dict:
    """Decode + preprocess a batch of rows ``{"pos", "path"}`` -> adds ``pixels`` float32 [B, *pixel_shape]
    (zeros for skipped files) and ``reason`` (empty when the file is usable; else why it was skipped)."""
    from clustermine.method.encoders.decode import load_item  # imports torch (seconds): only when this runs

    paths = [str(p) for p in batch["path"]]
    pixels = np.zeros((len(paths), *pixel_shape), dtype=np.float32)
    reasons = []
    for i, p in enumerate(paths):
        item = load_item(p, transform, max_pixels)
        if isinstance(item, str):
            reasons.append(item)
        elif tuple(item.shape) != tuple(pixel_shape):
            reasons.append(f"preprocessing gave shape {tuple(item.shape)}, expected {tuple(pixel_shape)}")
        else:
            pixels[i] = item.numpy()
            reasons.append("")
    return {"pos": np.asarray(batch["pos"], dtype=np.int64), "path": np.array(paths, dtype=object),
            "reason": np.array(reasons, dtype=object), "pixels": pixels}


class EncoderActor:
    """A Ray Data actor: loads the encoder once, turns decoded batches into features."""

    def __init__(self, spec: str, device: str, fingerprint_id: str, threads: int = 1) -> None:
        import torch

        torch.set_num_threads(max(1, int(threads)))
        self.encoder = load_encoder(spec, device=device)
        if self.encoder.fingerprint_id != fingerprint_id:
            raise EncoderError(
                f"encoder {spec!r} on node {_node_id()} has fingerprint {self.encoder.fingerprint_id}, the driver's "
                f"is {fingerprint_id}: install the same weights and packages on every node")
        self.node = _node_id()

    def __call__(self, batch: dict) -> dict:
        import torch

        ok = np.array([r == "" for r in batch["reason"]], dtype=bool)
        feats = np.zeros((len(ok), self.encoder.dim), dtype=np.float32)
        if ok.any():
            x = torch.from_numpy(np.ascontiguousarray(batch["pixels"][ok]))
            feats[ok] = self.encoder.encode_batch(x)
        return {"pos": batch["pos"], "path": batch["path"], "reason": batch["reason"], "features": feats,
                "node": np.array([self.node] * len(ok), dtype=object)}


def hash_block(paths: list[str], _shared: None) -> list[tuple[str | None, str | None]]:
    return [hash_or_reason(p) for p in paths]


def vote_block(features: np.ndarray, text_embeddings: np.ndarray, k: int, tau: float):
    return zero_shot_topk(features, text_embeddings, k=k, tau=tau)


def explain_block(features: np.ndarray, detector, top: int) -> list[dict]:
    return detector.explain(features, top=top)


def log_score_block(features: np.ndarray, detector) -> np.ndarray:
    return detector.log_scores(features)


# ---- helpers ---------------------------------------------------------------------------------------

def _node_id() -> str:
    try:
        import ray

        return ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001 - informational only
        return ""


def _pixel_shape(transform: Callable) -> tuple[int, ...]:
    """The preprocessed tensor's shape, from a neutral grey image (fixed-size encoders only)."""
    from PIL import Image

    return tuple(int(s) for s in transform(Image.new("RGB", (320, 240), (128, 128, 128))).shape)


def _chunk(batches: list[dict], names: Sequence[str], result_cls) -> tuple[np.ndarray, Any]:
    pos = np.concatenate([b["pos"] for b in batches]).astype(np.int64)
    reasons = [str(r) for b in batches for r in b["reason"]]
    feats = np.concatenate([b["features"] for b in batches])
    ok = [r == "" for r in reasons]
    errors = {names[p]: r for p, r in zip(pos.tolist(), reasons) if r}
    nodes = sorted({str(n) for b in batches for n in b["node"]})
    result = result_cls(features=feats[np.asarray(ok, dtype=bool)], ok=ok, errors=errors)
    result.nodes = nodes  # type: ignore[attr-defined]
    return pos, result


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail in seconds, not after Ray's long connect retries, when ``host:port`` does not answer."""
    import socket

    target = address.split("://", 1)[-1]
    if address == "auto" or ":" not in target:
        return
    host, _, port = target.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return
    except (OSError, ValueError) as exc:
        raise _unreachable(address, exc) from None


def _unreachable(address: str, exc: BaseException) -> RayClusterError:
    return RayClusterError(
        f"cannot connect to the Ray cluster at {address!r} ({exc}). Start one with `ray start --head` (then "
        "`ray start --address=HEAD:6379` on every other node) and pass its address with --ray or "
        f"{RAY_ADDRESS_ENV}, or run without --ray")


def _short(exc: BaseException, limit: int = 300) -> str:
    text = str(exc).strip().splitlines()
    line = text[-1] if text else ""
    return line[:limit]
