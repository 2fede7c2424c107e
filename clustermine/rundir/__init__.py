"""The run directory, split by responsibility.

- :mod:`.layout`   every file and folder name of a run (standard library only)
- :mod:`.listing`  the runs under a folder, from their ``run.json`` alone (no numeric imports)
- :mod:`.store`    create / open / check a run; metadata, locks, progress, arrays and their writers
- :mod:`.concepts` the concept edit log, its replay into the concept table, the vocabulary
- :mod:`.run`      :class:`Run`: the above plus the detector (calibrated on held-out images)

Import :class:`Run` from :mod:`clustermine.runs` (or here: it is loaded lazily, so that importing
``clustermine.rundir.layout`` or ``.listing`` stays light).
"""

from __future__ import annotations

import importlib

_LAZY = {"Run": "run", "Concept": "concepts", "concept_id": "concepts", "list_runs": "listing"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
