"""Who decided what on a run, and whether the record can be trusted.

The run's two decision logs (concept edits ``edits.jsonl``, image exclusions ``exclusions.jsonl``) are
hash-chained (:mod:`clustermine.store.chain`). This module is the one source for the CLI's
``clustermine verify``, the app's Concepts page and sidebar, and the HTML report: :func:`log_state`
(both logs verified, one line for people) and :func:`decisions` (every entry: when, who, auth mode,
role, action, target, and whether that entry is verified).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from clustermine.store import layout
from clustermine.store.chain import LogState, genesis, read_lines, verify_log
from clustermine.store.store import RunStore

LOGS = (layout.EDITS, layout.EXCLUSIONS)


@dataclass(frozen=True)
class RunLogState:
    """The state of a run's decision logs: ``edits`` and ``exclusions`` (:class:`LogState` each)."""

    edits: LogState
    exclusions: LogState

    @property
    def logs(self) -> tuple[LogState, LogState]:
        return self.edits, self.exclusions

    @property
    def ok(self) -> bool:
        """False when a log was altered (exit 1 of ``clustermine verify``)."""
        return all(s.ok for s in self.logs)

    @property
    def kind(self) -> str:
        """``altered`` (a log was), ``verified`` (some entries verified), ``unchained`` (entries, none
        chained) or ``empty``."""
        if not self.ok:
            return "altered"
        if any(s.count > s.unchained for s in self.logs):
            return "verified"
        return "unchained" if any(s.count for s in self.logs) else "empty"

    @property
    def count(self) -> int:
        return self.edits.count + self.exclusions.count

    @property
    def first_bad(self) -> LogState | None:
        """The first altered log (edits before exclusions), or None."""
        return next((s for s in self.logs if not s.ok), None)

    def message(self) -> str:
        """One line: ``verified: 23 decisions (edits 20, exclusions 3)`` / ``the log was altered at
        entry 7 (edits.jsonl): ...`` / ``unchained: ...`` / ``no decisions yet``."""
        bad = self.first_bad
        if bad is not None:
            return f"the log was altered at entry {bad.bad_entry} ({bad.log}): {bad.problem}"
        split = f"edits {self.edits.count}, exclusions {self.exclusions.count}"
        unchained = sum(s.unchained for s in self.logs)
        if self.kind == "empty":
            return "no decisions yet"
        if self.kind == "unchained":
            return (f"unchained: {self.count} decisions ({split}) written before ClusterMine chained its logs; "
                    "they cannot be verified")
        if unchained:
            return (f"verified: {self.count - unchained} of {self.count} decisions ({split}); the first "
                    f"{unchained} were written before the chain and are unchained")
        return f"verified: {self.count} decision{'' if self.count == 1 else 's'} ({split})"

    def short(self) -> str | None:
        """A few words for the sidebar (None when there is no decision yet)."""
        if self.kind == "empty":
            return None
        if not self.ok:
            return f"decision log altered at entry {self.first_bad.bad_entry} ({self.first_bad.log})"
        if self.kind == "unchained":
            return f"decision log: {self.count} unchained"
        unchained = sum(s.unchained for s in self.logs)
        if unchained:
            return f"decision log: {self.count - unchained} verified, {unchained} unchained"
        return f"decision log: verified ({self.count})"

    def to_dict(self) -> dict:
        return {"ok": self.ok, "kind": self.kind, "count": self.count, "message": self.message(),
                "logs": {s.log: s.to_dict() for s in self.logs}}


def log_state(run: RunStore) -> RunLogState:
    """Verify both decision logs of ``run`` (each against its genesis for this run id and its head record)."""
    return log_state_at(run.path, run.run_id)


def log_state_at(run_dir: str | os.PathLike, run_id: str) -> RunLogState:
    """:func:`log_state` from the run folder and its id alone (the app's sidebar has no open run)."""
    edits, excl = (verify_log(Path(run_dir) / name, start=genesis(name, run_id)) for name in LOGS)
    return RunLogState(edits, excl)


@dataclass(frozen=True)
class Decision:
    """One log entry for people. ``log``: ``edits`` / ``exclusions``; ``entry``: its 1-based number
    in that log; ``auth``: ``none`` / ``os`` / ``oidc`` / ``proxy`` (None for entries written before
    it was recorded); ``target``: the concept text or the image path; ``state``: ``verified`` /
    ``unchained`` / ``not verified``."""

    log: str
    entry: int
    ts: str | None
    user: str | None
    auth: str | None
    issuer: str | None
    role: str | None
    action: str | None
    target: str | None
    state: str

    def to_dict(self) -> dict:
        return asdict(self)


def _target(log: str, e: dict) -> str | None:
    if log == layout.EDITS:
        return e.get("text") or e.get("concept_id")
    path = e.get("path")
    return str(path) if path is not None else (f"row {e['row']}" if "row" in e else None)


def _entries(run: RunStore, name: str) -> list[dict | None]:
    """The log's entries in order; None for a line that is not a JSON object (the state names it)."""
    out: list[dict | None] = []
    for line in read_lines(run.file(name)):
        try:
            obj = json.loads(line.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            obj = None
        out.append(obj if isinstance(obj, dict) else None)
    return out


def decisions(run: RunStore, *, people: list[str] | tuple[str, ...] | None = None,
              state: RunLogState | None = None) -> list[Decision]:
    """Every decision of both logs, oldest first (by time, edits before exclusions on ties); only
    those signed by one of ``people`` when given. ``state``: a :func:`log_state` already computed."""
    state = state or log_state(run)
    out: list[Decision] = []
    for name, st in zip(LOGS, state.logs):
        short = name.split(".")[0]
        for n, e in enumerate(_entries(run, name), 1):
            e = e or {}
            out.append(Decision(short, n, e.get("ts"), e.get("user"), e.get("auth"), e.get("issuer"),
                                e.get("role"), e.get("action"), _target(name, e), st.entry_state(n)))
    if people is not None:
        wanted = set(people)
        out = [d for d in out if d.user in wanted]
    return sorted(out, key=lambda d: (d.ts or "", d.log != "edits", d.entry))


def people(items: list[Decision]) -> list[str]:
    """The people who signed ``items``, sorted (for a filter)."""
    return sorted({d.user for d in items if d.user})
