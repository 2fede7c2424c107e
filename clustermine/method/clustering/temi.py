"""TEMI clustering (Adaloglou et al., BMVC 2023) on precomputed feature arrays.

Implements METHOD.md section 2.1-2.7 (the official TEMI recipe) with the small-N defaults of 2.9/2.9b.
The H heads are trained as one batched model (stacked weights, ``bmm``) instead of a Python loop
over heads; the maths per head is unchanged (a unit test checks it against a per-head version).

Where this differs from the official code, deliberately:
- the loss -log sum_k (q_s q_t)^beta / p(k) is evaluated with logsumexp in log space (same value,
  no underflow);
- warm-up is ``warmup_frac`` of all optimiser steps (20% = TEMI's 20 of 100 epochs);
- the last layer is frozen for epoch 0 but at most 5% of all steps (matters only for the
  few-long-epochs schedules of large N);
- standardisation drops numerically constant dimensions (METHOD 2.9b: real features have some).
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
import warnings
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from clustermine.method.clustering.base import ClustererBase, InvalidClusteringInput, random_state_from
from clustermine.method.clustering.knn import KNN_METHODS, knn_indices, resolve_knn_method  # noqa: F401  (knn_indices: public here too)
from clustermine.core.errors import CancelledError
from clustermine.core.linalg import l2_normalize
from clustermine.method.cost import SlowClusteringWarning, check_clusterer_feasible

ProgressFn = Callable[[int, int], None]
CancelFn = Callable[[], bool]

from clustermine.method.schedule import (  # noqa: F401  (re-exported: the schedule rules need no torch)
    HEADS_PER_SAMPLES, LARGE_N, MAX_EPOCHS, MAX_HEADS, MIN_HEADS, MIN_STEPS, MIN_STEPS_SMALL_N, OFFICIAL_EPOCHS,
    SMALL_CLUSTERS, SMALL_STEP_WORK, STEP_OVERHEAD, VISITS_PER_CLUSTER,
    default_batch_size, default_epochs, default_min_steps, default_n_heads, default_schedule,
    schedule_work,
)
_EMBED_NORMS = ("auto", "standardize", "l2", "none")
_PREDICT_CHUNK = 8192


# --------------------------------------------------------------------------------------------
# defaults


def default_knn(n_samples: int, n_clusters: int) -> int:
    """k = clip(round(0.5 N / C), 5, 50), and at most N - 1 (METHOD 2.9)."""
    k = int(np.clip(round(0.5 * n_samples / max(n_clusters, 1)), 5, 50))
    return max(1, min(k, n_samples - 1))


# --------------------------------------------------------------------------------------------
# features


class EmbedNorm:
    """The head's input transform, fitted on the training features.

    ``"standardize"``: z = (e - mu) / sigma per dimension (TEMI's ``--embed_norm``, unbiased std);
    dimensions that are (numerically) constant are dropped -- real features have exactly-zero
    dimensions (METHOD 2.9b) and dividing by their std would blow up float noise.
    ``"l2"``: z = e / ||e||. ``"none"``: z = e.
    """

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.mean: np.ndarray | None = None
        self.scale: np.ndarray | None = None
        self.keep: np.ndarray | None = None

    def fit(self, X: np.ndarray) -> "EmbedNorm":
        if self.mode == "standardize":
            mean = X.mean(axis=0, dtype=np.float64)
            std = X.std(axis=0, ddof=1 if X.shape[0] > 1 else 0, dtype=np.float64)
            ref = float(std.mean())
            keep = std > 1e-4 * ref if ref > 0 else np.zeros(X.shape[1], dtype=bool)
            if not keep.any():  # every sample identical: nothing to standardise
                keep = np.ones(X.shape[1], dtype=bool)
                std = np.ones_like(std)
            self.keep = keep
            self.mean = mean[keep].astype(np.float32)
            self.scale = (1.0 / (std[keep] + 1e-8 * max(ref, 1e-30))).astype(np.float32)
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        if self.mode == "standardize":
            assert self.keep is not None and self.mean is not None and self.scale is not None
            return ((X[:, self.keep] - self.mean) * self.scale).astype(np.float32, copy=False)
        if self.mode == "l2":
            return l2_normalize(X)
        return X

    @property
    def n_out(self) -> int | None:
        return None if self.keep is None else int(self.keep.sum())


# --------------------------------------------------------------------------------------------
# batched heads


def _init_heads(
    n_heads: int, in_dim: int, hidden_dim: int, bottleneck_dim: int, n_clusters: int, gen: torch.Generator
) -> dict[str, torch.Tensor]:
    """H heads' parameters stacked along a head axis (METHOD 2.2).

    w1 is stored [D, H, hidden] so the shared-input first layer is a single GEMM.
    """

    def trunc(*shape: int) -> torch.Tensor:
        t = torch.empty(*shape)
        torch.nn.init.trunc_normal_(t, std=0.02, a=-2.0, b=2.0, generator=gen)
        return t

    # nn.Linear's default init (kaiming_uniform, a=sqrt(5)) = U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    bound = 1.0 / math.sqrt(bottleneck_dim)
    v = (torch.rand(n_heads, n_clusters, bottleneck_dim, generator=gen) * 2 - 1) * bound
    return {
        "w1": trunc(in_dim, n_heads, hidden_dim),
        "b1": torch.zeros(n_heads, hidden_dim),
        "w2": trunc(n_heads, hidden_dim, bottleneck_dim),
        "b2": torch.zeros(n_heads, bottleneck_dim),
        "v": v,  # weight-norm direction of the last layer [H, C, bottleneck]
        "g": torch.ones(n_heads, n_clusters, 1),  # weight-norm gain, trainable (norm_last_layer=False)
    }


def _heads_forward(p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """x [B, D] -> logits [H, B, C] of all heads."""
    d, h, hid = p["w1"].shape
    a = (x @ p["w1"].reshape(d, h * hid)).view(x.shape[0], h, hid).transpose(0, 1)  # [H, B, hid]
    a = F.gelu(a + p["b1"].unsqueeze(1))
    z = torch.baddbmm(p["b2"].unsqueeze(1), a, p["w2"])  # [H, B, bottleneck]
    z = F.normalize(z, dim=-1)
    w = p["g"] * p["v"] / p["v"].norm(dim=-1, keepdim=True)  # [H, C, bottleneck]
    return torch.bmm(z, w.transpose(1, 2))


def _temi_loss(
    s_logits: torch.Tensor,
    t_logits: torch.Tensor,
    prior: torch.Tensor,
    beta: float,
    student_temp: float,
    teacher_temp: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-head TEMI loss (METHOD 2.4-2.5).

    s_logits, t_logits: [H, 2B, C], rows [0, B) are view a, rows [B, 2B) its neighbour b.
    prior: [H, C], updated in place (EMA over the 2B teacher rows) *before* the loss.
    Returns (loss per head [H], pair weights [B]).
    """
    b = s_logits.shape[1] // 2
    with torch.no_grad():
        lt = F.log_softmax(t_logits / teacher_temp, dim=-1)
        qt = lt.exp()
        prior.mul_(0.9).add_(qt.mean(dim=1), alpha=0.1)
        weight = (qt[:, :b] * qt[:, b:]).sum(-1).mean(0)  # [B], shared by all heads
        log_prior = prior.log().unsqueeze(1)  # [H, 1, C]
    ls = F.log_softmax(s_logits / student_temp, dim=-1)
    # -log sum_k (q_s q_t)^beta / p(k), evaluated in log space; student on one view, teacher on the other.
    pmi_ab = torch.logsumexp(beta * (ls[:, :b] + lt[:, b:]) - log_prior, dim=-1)  # [H, B]
    pmi_ba = torch.logsumexp(beta * (ls[:, b:] + lt[:, :b]) - log_prior, dim=-1)
    loss = -0.5 * ((weight * pmi_ab).mean(1) + (weight * pmi_ba).mean(1))
    return loss, weight


@contextlib.contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    """Temporarily set torch's intra-op thread count (restored afterwards)."""
    if n is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


@contextlib.contextmanager
def _flush_denormals() -> Iterator[None]:
    """Treat denormal floats as zero while training (restored afterwards).

    The β-PMI loss multiplies many tiny probabilities, and arithmetic on denormal floats is very
    slow on x86 CPUs. Flushing them gave the same labels on Imagenette features; its speed-up was
    measured only on a loaded machine (508 -> 139 ms per step, 16 heads, N = 1000), not on a quiet one.
    """
    changed = torch.set_flush_denormal(True)
    try:
        yield
    finally:
        if changed:
            torch.set_flush_denormal(False)


# --------------------------------------------------------------------------------------------
# estimator


class TEMI(ClustererBase):
    """TEMI clustering of feature vectors (a scikit-learn estimator).

    ``fit(X [N, D])`` trains H student/teacher heads with the beta-weighted PMI loss on
    (image, random kNN neighbour) pairs; cluster ids are the teacher's lowest-loss head's argmax.
    Parameters left at ``None`` are derived from N and C (METHOD 2.9, :func:`default_schedule`):
    ``n_heads`` (clip(round(N / 250), 4, 16); more when N / C < 15, within the cost of the schedule
    for 2N), ``min_steps`` (clip(1000 + N, 1500, 2000)),
    ``knn``, ``batch_size``, ``epochs`` (>= ``min_steps`` optimiser steps; above N = 20,000 also
    ~5,000 samples per cluster, at most 100 epochs), ``lr`` (1e-4 * batch / 256).
    ``knn_method``: ``"exact"`` (chunked, CPU or CUDA), ``"approx"`` (NN-descent on the CPU) or
    ``"auto"`` (approximate on a CPU above ``clustering.knn.APPROX_KNN_ABOVE`` samples); resolved in
    ``knn_method_``; the approximate index is seeded from ``random_state``.
    On a CPU, ``fit`` warns (:class:`~clustermine.method.cost.SlowClusteringWarning`) when
    ``check_clusterer_feasible`` estimates the fit at over 30 minutes.
    ``embed_norm="auto"`` standardises per dimension when N >= 10 D, otherwise L2-normalises.
    ``progress(done_steps, total_steps)`` is called about once per epoch (at most ~200 times);
    ``cancel()`` returning True aborts with :class:`~clustermine.core.errors.CancelledError`.
    ``n_threads`` sets torch's intra-op threads for the duration of fit / predict only; None keeps
    torch's setting, except one thread for small steps (heads x batch <= 256).
    ``random_state``: an int seeds torch and NumPy directly (same int, same labels on the same
    machine); None or a RandomState draws that int. The keyword ``seed`` is a deprecated alias.

    Fitted attributes: ``labels_`` (int64 [N]), ``best_head_``, ``head_losses_`` ([H], last-epoch
    mean loss per head), ``loss_history_`` (epoch mean losses), ``n_iter_`` (optimiser steps),
    ``cluster_sizes_`` ([C]), ``n_occupied_``, ``prior_`` ([C], best head's cluster prior), the
    resolved ``knn_``, ``knn_method_``, ``batch_size_``, ``epochs_``, ``lr_``, ``embed_norm_``, ``head_labels_``
    (int64 [H, N]: every teacher head's argmax on the training set, each head a clustering; row
    ``best_head_`` is ``labels_``), and timings ``knn_time_`` / ``fit_time_`` (s).
    """

    _model_attribute = "_best"

    def __init__(
        self,
        n_clusters: int = 8,
        *,
        n_heads: int | None = None,
        knn: int | None = None,
        knn_method: str = "auto",
        batch_size: int | None = None,
        epochs: int | None = None,
        min_steps: int | None = None,
        beta: float = 0.6,
        student_temp: float = 0.1,
        teacher_temp: float = 0.1,
        momentum: float = 0.996,
        lr: float | None = None,
        weight_decay: float = 1e-4,
        warmup_frac: float = 0.2,
        hidden_dim: int = 512,
        bottleneck_dim: int = 256,
        embed_norm: str = "auto",
        random_state: Any = 0,
        device: str = "cpu",
        n_threads: int | None = None,
        progress: ProgressFn | None = None,
        cancel: CancelFn | None = None,
        verbose: bool = False,
        **deprecated: Any,
    ) -> None:
        self.n_clusters = n_clusters
        self.n_heads = n_heads
        self.knn = knn
        self.knn_method = knn_method
        self.batch_size = batch_size
        self.epochs = epochs
        self.min_steps = min_steps
        self.beta = beta
        self.student_temp = student_temp
        self.teacher_temp = teacher_temp
        self.momentum = momentum
        self.lr = lr
        self.weight_decay = weight_decay
        self.warmup_frac = warmup_frac
        self.hidden_dim = hidden_dim
        self.bottleneck_dim = bottleneck_dim
        self.embed_norm = embed_norm
        self.random_state = random_state_from(type(self).__name__, random_state, deprecated)
        self.device = device
        self.n_threads = n_threads
        self.progress = progress
        self.cancel = cancel
        self.verbose = verbose

    # ---------------------------------------------------------------- public API

    def fit(self, X: np.ndarray, y: object = None) -> "TEMI":
        """Train on X [N, D] (float16/32/64); sets ``labels_`` [N] and the other fitted attributes.
        Returns self."""
        X = self._features(X, fit=True)
        if X.ndim == 2 and torch.device(self.device).type == "cpu":
            keys = ("n_heads", "batch_size", "epochs", "min_steps", "knn_method")
            msg = check_clusterer_feasible("temi", X.shape[0], self.device, n_clusters=int(self.n_clusters),
                                           params={k: getattr(self, k) for k in keys})
            if msg:  # the pipeline asks check_clusterer_feasible before its long stages; this is for direct use
                warnings.warn(msg, SlowClusteringWarning, stacklevel=2)
        threads = self.n_threads
        if threads is None and X.ndim == 2:
            sched = default_schedule(X.shape[0], int(self.n_clusters), n_heads=self.n_heads,
                                     batch_size=self.batch_size, epochs=self.epochs, min_steps=self.min_steps)
            if sched["n_heads"] * sched["batch_size"] <= SMALL_STEP_WORK:
                threads = 1  # a small step's GEMMs cost less than waking a second thread (5x on a busy machine)
        with _torch_threads(threads), _flush_denormals():
            self._fit(X)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Cluster ids (int64 [M]) of X [M, D]: argmax of the teacher's best head."""
        return self._best_logits(X).argmax(1)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Soft assignments (float32 [M, C]) of the teacher's best head at the teacher temperature."""
        logits = torch.from_numpy(self._best_logits(X))
        return F.softmax(logits / self.teacher_temp, dim=1).numpy()

    # ---------------------------------------------------------------- internals

    def _validate(self, n: int, d: int) -> None:
        if n < 4:
            raise InvalidClusteringInput(f"TEMI needs at least 4 samples, got n_samples={n}")
        self._check_n_clusters(n)
        if self.n_heads is not None and self.n_heads < 1:
            raise InvalidClusteringInput(f"n_heads must be >= 1, got {self.n_heads}")
        if self.embed_norm not in _EMBED_NORMS:
            raise InvalidClusteringInput(f"embed_norm must be one of {', '.join(_EMBED_NORMS)}, got {self.embed_norm!r}")
        if self.batch_size is not None and not 2 <= self.batch_size <= n:
            raise InvalidClusteringInput(f"batch_size must be in [2, n_samples={n}], got {self.batch_size}")
        if self.epochs is not None and self.epochs < 1:
            raise InvalidClusteringInput(f"epochs must be >= 1, got {self.epochs}")
        if self.knn_method not in KNN_METHODS:
            raise InvalidClusteringInput(f"knn_method must be one of {', '.join(KNN_METHODS)}, got {self.knn_method!r}")
        if not 0.0 <= self.warmup_frac < 1.0:
            raise InvalidClusteringInput(f"warmup_frac must be in [0, 1), got {self.warmup_frac}")

    def _check_cancel(self, where: str) -> None:
        if self.cancel is not None and self.cancel():
            raise CancelledError(f"TEMI cancelled {where}")

    def _fit(self, X: np.ndarray) -> None:
        n, d = X.shape
        self._validate(n, d)
        self.__dict__.pop("_best", None)  # a failed or cancelled re-fit must not leave a stale model
        c = int(self.n_clusters)
        dev = torch.device(self.device)
        t_start = time.perf_counter()

        # ---- resolved hyper-parameters
        k = default_knn(n, c) if self.knn is None else int(self.knn)
        sched = default_schedule(n, c, n_heads=self.n_heads, batch_size=self.batch_size, epochs=self.epochs,
                                 min_steps=self.min_steps)
        H, bs, epochs = sched["n_heads"], sched["batch_size"], sched["epochs"]
        spe = n // bs  # drop_last
        total = spe * epochs
        lr = 1e-4 * bs / 256 if self.lr is None else float(self.lr)
        warmup = int(round(self.warmup_frac * total))
        # Last layer frozen for epoch 0 (TEMI freeze_last_layer=1 of 100 epochs); capped at 5% of all
        # steps so that short schedules (few, long epochs at large N) still train it.
        freeze = min(spe, max(1, int(math.ceil(0.05 * total))))
        mode = self.embed_norm
        if mode == "auto":
            mode = "standardize" if n >= 10 * d else "l2"

        self.knn_, self.batch_size_, self.epochs_, self.lr_ = k, bs, epochs, lr
        self.n_heads_, self.min_steps_ = H, sched["min_steps"]
        self.embed_norm_ = mode
        self.knn_method_ = resolve_knn_method(self.knn_method, n, dev)
        seed = self._seed()

        # ---- data, neighbours
        self._check_cancel("before start")
        self._norm = EmbedNorm(mode).fit(X)
        Z = torch.from_numpy(self._norm.transform(X)).to(dev)
        nn_idx = knn_indices(X, k, method=self.knn_method_, device=dev, random_state=seed, cancel=self.cancel)
        self.knn_time_ = time.perf_counter() - t_start

        # ---- model
        gen = torch.Generator().manual_seed(seed)
        rng = np.random.default_rng(seed)
        student = {
            name: t.to(dev).requires_grad_(True)
            for name, t in _init_heads(H, Z.shape[1], self.hidden_dim, self.bottleneck_dim, c, gen).items()
        }
        teacher = {name: t.detach().clone() for name, t in student.items()}
        prior = torch.full((H, c), 1.0 / c, device=dev)
        decay = [student[n_] for n_ in ("w1", "w2", "v", "g")]  # >= 2-D tensors in the per-head model
        no_decay = [student["b1"], student["b2"]]
        groups = [{"params": decay, "weight_decay": self.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        try:  # the fused kernel saves ~10% of a CPU step; same update rule
            opt = torch.optim.AdamW(groups, lr=lr, fused=True)
        except (RuntimeError, TypeError):
            opt = torch.optim.AdamW(groups, lr=lr)
        s_list = [student[name] for name in teacher]
        t_list = list(teacher.values())
        last_layer = (student["v"], student["g"])

        # ---- train
        self.loss_history_: list[float] = []
        head_losses = torch.zeros(H, device=dev)
        report_every = max(1, total // 200)
        last_report = 0
        step = 0
        for epoch in range(epochs):
            self._check_cancel(f"at epoch {epoch}")
            perm = rng.permutation(n)[: spe * bs].reshape(spe, bs)
            partner = nn_idx[np.arange(n), rng.integers(0, k, size=n)]  # one fresh neighbour per sample
            head_sum = torch.zeros(H, device=dev)
            for it in range(spe):
                if it and it % 100 == 0:
                    self._check_cancel(f"at step {step}")
                idx = perm[it]
                pair = torch.from_numpy(np.concatenate([idx, partner[idx]])).to(dev)
                x = Z[pair]  # [2B, D]: views a then their neighbours b
                for group in opt.param_groups:
                    group["lr"] = lr * step / warmup if step < warmup else lr
                with torch.no_grad():
                    t_logits = _heads_forward(teacher, x)
                s_logits = _heads_forward(student, x)
                loss_h, _ = _temi_loss(
                    s_logits, t_logits, prior, self.beta, self.student_temp, self.teacher_temp
                )
                opt.zero_grad(set_to_none=True)
                loss_h.mean().backward()
                if step < freeze:
                    for p in last_layer:
                        p.grad = None
                opt.step()
                with torch.no_grad():
                    for t_p, s_p in zip(t_list, s_list):
                        t_p.lerp_(s_p, 1.0 - self.momentum)  # teacher <- m teacher + (1 - m) student
                    head_sum += loss_h.detach()
                step += 1
                if self.progress is not None and (step - last_report >= report_every or step == total):
                    self.progress(step, total)
                    last_report = step
            head_losses = head_sum / spe
            epoch_loss = float(head_losses.mean())
            if not math.isfinite(epoch_loss):
                raise RuntimeError(f"TEMI loss became {epoch_loss} at epoch {epoch}")
            self.loss_history_.append(epoch_loss)
            if self.verbose and (epoch % max(1, epochs // 10) == 0 or epoch == epochs - 1):
                print(f"[TEMI] epoch {epoch + 1}/{epochs} step {step} loss {epoch_loss:.4f}", file=sys.stderr)

        # ---- results
        self.n_iter_ = step
        self.head_losses_ = head_losses.cpu().numpy().astype(np.float64)
        self.best_head_ = int(np.argmin(self.head_losses_))
        h = self.best_head_
        self._best = {  # the teacher's best head only: w1 is [D, H, hidden], the rest [H, ...]
            name: (t[:, h : h + 1] if name == "w1" else t[h : h + 1]).clone() for name, t in teacher.items()
        }
        self.prior_ = prior[h].cpu().numpy()
        self.labels_ = self.predict(X)
        with torch.no_grad():
            step = max(1, _PREDICT_CHUNK // 4)  # all H heads at once: keep [H, step, hidden] small
            self.head_labels_ = np.concatenate(
                [_heads_forward(teacher, Z[i0 : i0 + step]).argmax(-1).cpu().numpy()
                 for i0 in range(0, n, step)], axis=1).astype(np.int64)
        self.head_labels_[h] = self.labels_  # the best head exactly as predict() labels it
        self.cluster_sizes_ = np.bincount(self.labels_, minlength=c)
        self.n_occupied_ = int((self.cluster_sizes_ > 0).sum())
        self.fit_time_ = time.perf_counter() - t_start

    def _best_logits(self, X: np.ndarray) -> np.ndarray:
        """Teacher best-head logits, float32 [M, C]."""
        X = self._features(X, fit=False)
        dev = self._best["w1"].device
        out = np.empty((X.shape[0], int(self.n_clusters)), dtype=np.float32)
        with torch.no_grad(), _torch_threads(self.n_threads):
            for i0 in range(0, X.shape[0], _PREDICT_CHUNK):
                z = torch.from_numpy(self._norm.transform(X[i0 : i0 + _PREDICT_CHUNK])).to(dev)
                out[i0 : i0 + len(z)] = _heads_forward(self._best, z)[0].cpu().numpy()
        return out
