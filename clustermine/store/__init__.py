"""The run store: a run is a folder on disk (config, features, assignments, votes, concepts with
their edit log, exclusions), written atomically, reloadable. Files, locks and logs, no analysis.

- :mod:`.layout`     every file and folder name of a run (standard library only)
- :mod:`.listing`    the runs under a folder, from their ``run.json`` alone (no numeric imports)
- :mod:`.store`      create / open / check a run; metadata, locks, progress, arrays and their writers
- :mod:`.concepts`   the concept edit log and its replay into the concept table, the vocabulary
- :mod:`.exclusions` the exclusion log ("not ID" images) and its replay
- :mod:`.chain`      the decision logs' hash chain: chained appends, ``verify_log``
- :mod:`.run`        :class:`Run`: the above in one object

Names are loaded lazily, so that importing ``clustermine.store.layout`` or ``.listing`` stays light.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "Run": "run", "Concept": "concepts", "concept_id": "concepts", "replay_edits": "concepts",
    "EDIT_ACTIONS": "concepts", "POSITIVE_STATUSES": "concepts",
    "CONCEPT_STATUSES": "concepts", "action_for": "concepts", "check_added_text": "concepts", "list_runs": "listing", "RUN_FORMAT": "layout",
    "STATUSES": "store", "now_iso": "store", "package_versions": "store", "comparable_config": "store",
}
__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
