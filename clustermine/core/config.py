"""The settings of a mining run: :class:`MineConfig`, the one place their defaults live.

The CLI's ``mine`` flags are derived from MineConfig's fields (flag name, help and choices are in
each field's metadata), the web app's new-run form takes its defaults from it, and a run stores
its resolved config in ``run.json``; ``clustermine resume RUN_DIR`` (the app's worker) rebuilds the
config from there with :meth:`MineConfig.from_dict`, so every field reaches the worker.

The score temperature τ belongs to the encoder (:func:`default_tau`): the method's τ = 0.01 is a
CLIP value; the offline ConSE encoder's similarities are spread differently and τ = 0.05 scored
better on both benchmarks and on held-out data (BENCHMARKS.md). ``MineConfig.tau = None`` means
"the encoder's default" and is replaced by the concrete value when the run is created.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import asdict, dataclass, field
from typing import Any

from clustermine.core.errors import ClusterMineError

#: τ for open_clip encoders (the ClusterMine / NegLabel value for CLIP similarities).
OPEN_CLIP_TAU = 0.01
#: τ for the offline ConSE encoder (BENCHMARKS.md, τ ablation on B1 and B2).
OFFLINE_TAU = 0.05

CLUSTERER_NAMES = ("temi", "kmeans")  # the keys of clustering.CLUSTERERS (checked by a test)
#: The target true-positive rate on ID images that calibrates a detector's threshold (the CLIP-OOD
#: papers' FPR95 operating point): every workflow, the CLI and the app default to it.
DEFAULT_TPR = 0.95
#: A mining job's stages, in order (progress, timings, the whole-job ETA and the app's stage list).
STAGES = ("scan", "encode", "corpus", "cluster", "vote")


def user_identity(user: str | None = None) -> str:
    """Who signs a decision: ``user`` when given, else the OS user (``$USER``), else 'unknown'."""
    import os

    return (user or "").strip() or os.environ.get("USER") or "unknown"


def default_tau(encoder_spec: str | None) -> float:
    """The default score temperature τ for an encoder spec (``offline`` or ``openclip:...``)."""
    return OFFLINE_TAU if (encoder_spec or "offline").strip() == "offline" else OPEN_CLIP_TAU


def _setting(default: Any = dataclasses.MISSING, *, help: str, flag: str | None = None,
             choices: tuple | None = None, default_factory: Any = dataclasses.MISSING) -> Any:
    """A MineConfig field with what the CLI needs: help text, flag name (default ``--name-with-dashes``)
    and allowed values."""
    meta = {"help": help, "flag": flag, "choices": choices}
    if default_factory is not dataclasses.MISSING:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class MineConfig:
    """All parameters of a mining run (stored, resolved, in ``run.json``)."""

    encoder: str = _setting("offline", help="offline (no network) or openclip:ARCH:TAG | openclip:hf-hub:ORG/REPO | "
                            "openclip:local-dir:PATH | openclip:ARCH@CHECKPOINT")
    n_clusters: int | None = _setting(None, flag="--clusters",
                                      help="number of clusters C (default: round(sqrt(N/2)) from the image count)")
    clusterer: str = _setting("temi", choices=CLUSTERER_NAMES, help="clustering method")
    clusterer_params: dict = _setting(default_factory=dict, flag="--clusterer-param",
                                      help="clusterer option KEY=VALUE (VALUE read as JSON when it parses, "
                                           "e.g. n_init=3 or n_heads=4); repeat for several")
    corpus: str = _setting("wordnet-nouns", help="wordnet-nouns | wordnet-nouns-adjectives | "
                           "wordnet-nouns-first-lemma | PATH (a text file, one concept per line)")
    template: str | None = _setting(None, help="prompt template with {} for the concept (default: the encoder's)")
    tau: float | None = _setting(None, help=f"score temperature (default: the encoder's, {OPEN_CLIP_TAU} for "
                                 f"open_clip, {OFFLINE_TAU} for offline)")
    seed: int = _setting(0, help="random seed (hold-out split and clustering)")
    holdout_fraction: float = _setting(0.1, flag="--holdout",
                                       help="fraction of ID images held out of mining to calibrate the threshold")
    topk: int = _setting(5, help="zero-shot top-k concepts stored per image (votes use the first)")
    batch_size: int = _setting(32, help="images per encoder batch")
    device: str = _setting("auto", help="auto | cpu | cuda | cuda:N | mps")
    max_pixels: int | None = _setting(None, help="decompression-bomb guard (pixels per image; default 89M)")

    def to_dict(self) -> dict:
        return asdict(self)

    def resolved(self) -> "MineConfig":
        """A copy with every "use the default" resolved to a concrete value (τ from the encoder)."""
        tau = default_tau(self.encoder) if self.tau is None else float(self.tau)
        return dataclasses.replace(self, tau=tau, clusterer_params=dict(self.clusterer_params))

    def validate(self, source: str = "mining settings") -> "MineConfig":
        """Raise ClusterMineError naming ``source`` and the bad setting; returns self."""
        def bad(name: str, why: str) -> ClusterMineError:
            return ClusterMineError(f"{source}: {name}={getattr(self, name)!r} {why}")

        def is_int(v: Any) -> bool:
            return isinstance(v, numbers.Integral) and not isinstance(v, bool)

        def is_real(v: Any) -> bool:
            return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)

        for name in ("encoder", "clusterer", "corpus", "device"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name).strip():
                raise bad(name, "must be a non-empty text")
        if self.clusterer not in CLUSTERER_NAMES:
            raise bad("clusterer", f"is not one of {', '.join(CLUSTERER_NAMES)}")
        if self.n_clusters is not None and not (is_int(self.n_clusters) and self.n_clusters >= 1):
            raise bad("n_clusters", "must be a positive integer or null (automatic)")
        if not isinstance(self.clusterer_params, dict) or not all(isinstance(k, str) for k in self.clusterer_params):
            raise bad("clusterer_params", "must be a mapping of option names to values")
        if self.template is not None and (not isinstance(self.template, str) or "{}" not in self.template):
            raise bad("template", "must be a text containing {}")
        if self.tau is not None and not (is_real(self.tau) and self.tau > 0):
            raise bad("tau", "must be a positive number")
        if not is_int(self.seed) or self.seed < 0:
            raise bad("seed", "must be a non-negative integer")
        if not (is_real(self.holdout_fraction) and 0 <= self.holdout_fraction < 1):
            raise bad("holdout_fraction", "must be a number in [0, 1)")
        for name in ("topk", "batch_size"):
            if not is_int(getattr(self, name)) or getattr(self, name) < 1:
                raise bad(name, "must be a positive integer")
        if self.max_pixels is not None and not (is_int(self.max_pixels) and self.max_pixels >= 1):
            raise bad("max_pixels", "must be a positive integer or null")
        return self

    @classmethod
    def from_dict(cls, config: dict, source: str = "config") -> "MineConfig":
        """The MineConfig stored in a run's config (which also holds its inputs, :data:`RUN_ONLY_KEYS`).

        Missing settings take the current defaults; an unknown one is refused (a run written by a
        newer version), naming ``source``.
        """
        if not isinstance(config, dict):
            raise ClusterMineError(f"{source}: the config is not a mapping")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(config) - names - RUN_ONLY_KEYS)
        if unknown:
            raise ClusterMineError(f"{source}: unknown setting(s) {', '.join(unknown)} (written by a newer version?)")
        return cls(**{k: v for k, v in config.items() if k in names}).validate(source)


#: Keys a run's stored config holds besides MineConfig's fields: its inputs (an images folder, or the
#: embeddings of ``mine --features`` with their paths file and image root) and who created it when.
RUN_ONLY_KEYS = frozenset({"images_dir", "features_file", "paths_file", "image_root", "created", "user"})


def stored_tau(config: dict) -> float:
    """τ of a run from its stored config: the stored value, else the encoder's default."""
    tau = (config or {}).get("tau")
    return float(tau) if tau is not None else default_tau((config or {}).get("encoder", MineConfig.encoder))
