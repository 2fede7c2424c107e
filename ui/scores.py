"""Process-wide caches around :mod:`clustermine.workflows.whatif` (the engine computes; this module only
keeps its results per run and per edit, so reruns and other sessions reuse them).

Convention everywhere: higher score = more in-distribution.
"""

from __future__ import annotations

import json

import numpy as np
import streamlit as st

from clustermine.workflows import whatif
from clustermine.store import layout
from clustermine.store import Run
from clustermine.method.scoring import WhatIfScorer
from clustermine.workflows.whatif import HeldOut, ProgressFn, WhatIf, encode_folder, lse_ready

from . import cache
from clustermine.workflows.whatif import run_detector
from clustermine.core.config import DEFAULT_TPR

__all__ = ["HeldOut", "WhatIf", "all_scores", "current_threshold", "detector_now", "encode_folder", "heldout",
           "lse_ready", "ood_comparison", "sample_scorer", "score_features", "what_if"]


@st.cache_resource(max_entries=4, show_spinner=False)
def _heldout(path: str, stamp: str) -> HeldOut:
    return whatif.heldout(cache.load_run(path))


def heldout(run: Run) -> HeldOut:
    """``whatif.heldout(run)``, kept per run and per version of its features, embeddings, τ and
    exclusions (an excluded image no longer calibrates)."""
    excluded = layout.file_stamp(run.file(layout.EXCLUSIONS))
    return _heldout(str(run.path), json.dumps([whatif.lse_stamp(run), excluded]))


def what_if(run: Run, tpr: float = DEFAULT_TPR) -> WhatIf:
    return whatif.what_if(run, tpr, heldout(run))


def current_threshold(run: Run, tpr: float) -> tuple[float | None, str]:
    return whatif.current_threshold(run, tpr, heldout(run))


@st.cache_resource(max_entries=4, show_spinner=False)
def _scorer_for(key: str, _run_path: str, _features: np.ndarray) -> WhatIfScorer:
    return whatif.sample_scorer(cache.load_run(_run_path), _features)


def sample_scorer(run: Run, features: np.ndarray) -> WhatIfScorer:
    """``whatif.sample_scorer`` kept per run and per content of ``features``."""
    from clustermine.workflows.projection import features_key

    return _scorer_for(f"{run.path}|{run.tau}|{features_key(features)}", str(run.path), features)


def ood_comparison(run: Run, ood: WhatIfScorer) -> dict:
    return whatif.ood_comparison(run, ood, heldout(run))


@st.cache_resource(max_entries=2, show_spinner=False)
def _detector(path: str, edits: tuple, meta: tuple):
    return run_detector(cache.load_run(path), calibrate=False)


def detector_now(run: Run):
    """``run_detector(run, calibrate=False)`` for the current edits (never reused across edits)."""
    return _detector(str(run.path), cache.edits_key(run), cache._stat_key(layout.meta_path(run.path)))


def score_features(run: Run, features: np.ndarray, tpr: float, top: int = 3) -> tuple[list[dict], float | None, str]:
    return whatif.score_features(run, features, tpr, top, detector=detector_now(run), held=heldout(run))


def all_scores(run: Run, progress: ProgressFn | None = None) -> np.ndarray:
    return whatif.all_scores(run, progress)
