""":class:`Run`: a run directory's files, concept table and exclusions in one object."""

from __future__ import annotations

from clustermine.store.concepts import ConceptTable
from clustermine.store.exclusions import ExclusionTable


class Run(ConceptTable, ExclusionTable):
    """A run directory. Use :meth:`create` or :meth:`open`; arrays are loaded lazily and cached.

    Files and folders: :mod:`clustermine.store.layout`. Storage, metadata and progress:
    :class:`~clustermine.store.store.RunStore`; concepts and edits:
    :class:`~clustermine.store.concepts.ConceptTable`; images marked "not ID":
    :class:`~clustermine.store.exclusions.ExclusionTable`. The detector of a run and its what-if
    analyses: :mod:`clustermine.workflows.whatif` (``run_detector(run)``).
    """
