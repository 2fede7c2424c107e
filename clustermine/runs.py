"""The run directory: the one durable state shared by the engine, the CLI and the web app.

The implementation lives in :mod:`clustermine.rundir` (file names in
:mod:`clustermine.rundir.layout`); this module keeps the public names where they always were.
"""

from __future__ import annotations

from .rundir.concepts import EDIT_ACTIONS, POSITIVE_STATUSES, Concept, concept_id, replay_edits
from .rundir.layout import RUN_FORMAT
from .rundir.listing import list_runs
from .rundir.run import Run
from .rundir.store import STATUSES, _comparable, now_iso, package_versions

__all__ = ["Run", "Concept", "list_runs", "concept_id", "now_iso", "package_versions", "replay_edits",
           "RUN_FORMAT", "STATUSES", "POSITIVE_STATUSES", "EDIT_ACTIONS", "_comparable"]

