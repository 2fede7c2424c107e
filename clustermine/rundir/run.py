""":class:`Run`: a run directory's files and concept table, and the detector they define."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..scoring import Detector, WhatIfScorer
from . import layout
from .concepts import ConceptTable
from .exclusions import ExclusionTable


class Run(ConceptTable, ExclusionTable):
    """A run directory. Use :meth:`create` or :meth:`open`; arrays are loaded lazily and cached.

    Files and folders: :mod:`clustermine.rundir.layout`. Storage, metadata and progress:
    :class:`~clustermine.rundir.store.RunStore`; concepts and edits:
    :class:`~clustermine.rundir.concepts.ConceptTable`; images marked "not ID":
    :class:`~clustermine.rundir.exclusions.ExclusionTable`; what-if analyses: :mod:`clustermine.whatif`.
    """

    def detector(self, *, calibrate: bool = True, tpr: float = 0.95) -> Detector:
        """A Detector reflecting the current concept edits; with ``calibrate`` its threshold is the
        calibrated one for target ``tpr`` (cross-fitted + held-out ID images, order-statistic rule:
        :func:`clustermine.whatif.current_threshold`)."""
        vocab, extra_emb, pos_rows = self.vocabulary()
        emb = self.text_embeddings()
        if len(extra_emb):
            emb = np.concatenate([emb, extra_emb])
        enc = self.meta.get("encoder") or {}
        det = Detector(concepts=vocab, text_embeddings=emb, positive_idx=pos_rows, tau=self.tau,
                       encoder_spec=enc.get("spec", ""), encoder_fingerprint=enc.get("fingerprint", {}),
                       encoder_fingerprint_id=enc.get("fingerprint_id", ""),
                       template=self.config.get("template") or "{}")
        if calibrate and len(pos_rows):
            from ..whatif import current_threshold

            det.threshold, det.threshold_rule = current_threshold(self, tpr)
        return det

    def what_if_scorer(self, features: np.ndarray | None = None) -> WhatIfScorer:
        """A :class:`WhatIfScorer` over ``features`` float32 [N, D] (default: the held-out ID
        images, whose corpus LSE is cached in the run: :func:`clustermine.whatif.heldout`)."""
        if features is None:
            from ..whatif import heldout

            return heldout(self).scorer
        return WhatIfScorer(features, self.text_embeddings(), self.tau)

    def export_detector(self, folder: str | os.PathLike | None = None) -> Path:
        """Save the calibrated detector (default: ``<run>/detector/``)."""
        return self.detector().save(Path(folder) if folder else layout.detector_dir(self.path))
