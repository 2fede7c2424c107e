"""The concept table of a run: the mined Y_pos, the append-only edit log, and its replay.

``mined.json`` is never edited; every accept / reject / restore / add is one line of
``edits.jsonl`` (serialised by a file lock, so two sessions editing one run lose nothing), and the
current table is the replay of the log over the mined concepts (written to ``concepts.json``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from filelock import Timeout

from clustermine.method.corpus import normalize_concept
from clustermine.core.errors import ClusterMineError, RunError
from clustermine.method.mining import ClusterStats, MinedConcept, clustering_winners, support_counts
from clustermine.core.storage import atomic_save_npy, atomic_write_json, atomic_write_jsonl
from clustermine.store import layout
from clustermine.store.store import RunStore, now_iso
from clustermine.core.config import user_identity
from clustermine.core.identity import Actor
from clustermine.core.roles import require
from clustermine.method.corpus import embed_concepts

POSITIVE_STATUSES = ("mined", "accepted", "added")
EDIT_ACTIONS = ("accept", "reject", "restore", "add")
CONCEPT_STATUSES = ("mined", "accepted", "rejected", "added")  # what a reviewer may set a concept to


def action_for(old: str, new: str) -> str | None:
    """The edit (one of EDIT_ACTIONS) that moves a concept from status ``old`` to ``new``; None when
    there is nothing to do. Back to mined / added is a ``restore`` (replay gives mined concepts
    ``mined`` and the user's ``added``). ClusterMineError on a status that is not a concept status."""
    if new not in CONCEPT_STATUSES:
        raise ClusterMineError(f"unknown concept status {new!r}; use one of {', '.join(CONCEPT_STATUSES)}")
    if new == old:
        return None
    if new == "rejected":
        return "reject"
    if new == "accepted":
        return "accept"
    return "restore"


def set_concept_status(table: "ConceptTable", key: str, status: str, *, user: str | None = None,
                       actor: Actor | None = None) -> tuple[Concept, str | None]:
    """Give the concept ``key`` (id or text) of ``table`` the status ``status`` through the edit
    :func:`action_for` names (logged like any edit). Returns ``(concept now, the action or None when
    it already had that status)``; ClusterMineError names an unknown concept or status."""
    require(actor, "edit_concepts")
    current = table.find_concept(key)
    if current is None:
        raise ClusterMineError(f"no concept {key!r} in this run (give its id or its text)")
    action = action_for(current.status, status)
    if action is None:
        return current, None
    return table.edit_concept(action, current.id, user=user, actor=actor), action


def concept_id(text: str) -> str:
    """Stable id of a concept: ``c-`` + 10 hex of sha1 of its normalised text."""
    return "c-" + hashlib.sha1(normalize_concept(text).encode("utf-8")).hexdigest()[:10]


@dataclass
class Concept:
    """One row of the concept table (Y_pos candidates and their review status)."""

    id: str
    text: str
    status: str  # mined | accepted | rejected | added
    source: str  # mined | user
    corpus_index: int | None  # row in corpus.txt, or None for user concepts outside V
    clusters: list[int] = field(default_factory=list)
    votes: int = 0
    purity: float | None = None
    examples: list[int] = field(default_factory=list)  # feature rows of example images
    updated: str | None = None
    user: str | None = None
    # Stability (:mod:`clustermine.workflows.stability`): fraction of the run's clusterings (TEMI heads, or
    # seeds) whose own vote elects this concept; None = unknown (no head / seed labels stored).
    support: float | None = None
    support_count: int | None = None  # clusterings electing it
    support_total: int | None = None  # clusterings in all

    @property
    def single_head(self) -> bool:
        """Elected by exactly one of several clusterings (a concept that may be noise)."""
        return self.support_count == 1 and (self.support_total or 0) > 1

    @property
    def is_positive(self) -> bool:
        return self.status in POSITIVE_STATUSES

    def to_dict(self) -> dict:
        return asdict(self)


def read_edit_log(path: Path) -> list[dict]:
    """The edits of ``edits.jsonl`` at ``path``, oldest first ([] if absent); RunError names a corrupt line."""
    if not path.exists():
        return []
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except ValueError as exc:
            raise RunError(f"{path}: line {n} is corrupt ({exc})") from exc
    return out


def replay_edits(mined: list[MinedConcept], edits: list[dict], vocab_index: dict[str, int]) -> list[Concept]:
    """The concept table after applying ``edits`` in order to the ``mined`` concepts.

    ``vocab_index`` maps corpus text -> row (gives added concepts that are in the corpus their row).
    Edits of unknown concepts are ignored; an ``add`` of a mined concept accepts it.
    """
    table: dict[str, Concept] = {}
    for m in mined:
        cid = concept_id(m.text)
        table[cid] = Concept(cid, m.text, "mined", "mined", m.index, list(m.clusters), m.votes, m.purity,
                             list(m.examples))
    for e in edits:
        cid, action = e["concept_id"], e["action"]
        if action == "add" and cid not in table:
            table[cid] = Concept(cid, e["text"], "added", "user", vocab_index.get(e["text"]))
        c = table.get(cid)
        if c is None:
            continue
        if action == "add":
            c.status = "added" if c.source == "user" else "accepted"
        elif action == "accept":
            c.status = "accepted" if c.source == "mined" else "added"
        elif action == "reject":
            c.status = "rejected"
        elif action == "restore":
            c.status = "mined" if c.source == "mined" else "added"
        c.updated, c.user = e.get("ts"), e.get("user")
    return list(table.values())


class ConceptTable(RunStore):
    """A run with its concept table, edit log and vocabulary (corpus + user-added concepts)."""

    def mined_concepts(self) -> list[MinedConcept]:
        return self._cached("mined", lambda: [MinedConcept(**d) for d in self._read_json(layout.MINED)])

    def write_mining(self, stats: list[ClusterStats], mined: list[MinedConcept]) -> None:
        """Store the cluster statistics and the mined concepts, and rebuild the concept table."""
        atomic_write_json(self.file(layout.CLUSTER_STATS), [s.to_dict() for s in stats])
        atomic_write_json(self.file(layout.MINED), [m.to_dict() for m in mined])
        self.cache.clear()
        with self.lock(layout.EDITS_LOCK):
            self._write_concepts(self._replay(self._read_edits()))

    def _read_edits(self) -> list[dict]:
        return read_edit_log(self.file(layout.EDITS))

    def edits(self) -> list[dict]:
        """The concept edit log, oldest first."""
        return self._read_edits()

    def _vocab_index(self) -> dict[str, int]:
        return self._cached("vocab_index", lambda: {c: i for i, c in enumerate(self.vocabulary_base())})

    def _replay(self, edits: list[dict]) -> list[Concept]:
        concepts = replay_edits(self.mined_concepts(), edits, self._vocab_index())
        attach_support(self, concepts)
        return concepts

    def concepts(self) -> list[Concept]:
        """The current concept table: mined concepts and user additions with their status."""
        return self._replay(self._read_edits())

    def _write_concepts(self, concepts: list[Concept]) -> None:
        atomic_write_json(self.file(layout.CONCEPTS), [c.to_dict() for c in concepts])

    def find_concept(self, key: str, concepts: list[Concept] | None = None) -> Concept | None:
        """Look a concept up by id or by (normalised) text."""
        concepts = concepts if concepts is not None else self.concepts()
        norm = normalize_concept(key)
        for c in concepts:
            if c.id == key or c.text == norm:
                return c
        return None

    def edit_concept(self, action: str, key: str, *, encoder=None, user: str | None = None,
                     actor: Actor | None = None) -> Concept:
        """Apply one edit (accept / reject / restore by id or text; add by text) and log it.

        Takes effect at once: :meth:`concepts`, :meth:`positive_concepts` and ``detector()``
        reflect it. ``add`` of a concept outside the corpus embeds it with ``encoder`` (loaded from
        the run's encoder spec when not given). Safe against concurrent editors (file lock).
        ``actor``: who acts; PermissionDenied before anything is written when its role may not.
        """
        require(actor, "edit_concepts")
        if action not in EDIT_ACTIONS:
            raise ClusterMineError(f"unknown concept action {action!r}; use one of {', '.join(EDIT_ACTIONS)}")
        if self.status != "done":
            raise RunError(f"{self.path}: concepts can be edited once mining has finished (status {self.status!r})")
        text = normalize_concept(key)
        if action == "add" and not text:
            raise ClusterMineError("cannot add an empty concept")
        if action == "add" and len(text) > 200:
            raise ClusterMineError("concept text is too long (200 characters at most)")
        if action == "add" and text not in self._vocab_index():
            self._ensure_added_embedding(text, encoder)
        try:
            with self.lock(layout.EDITS_LOCK):
                edits = self._read_edits()
                concepts = self._replay(edits)
                if action == "add":
                    cid = concept_id(text)
                else:
                    found = self.find_concept(key, concepts)
                    if found is None:
                        raise ClusterMineError(f"no concept {key!r} in this run; `add` it first")
                    cid, text = found.id, found.text
                entry = {"seq": len(edits) + 1, "ts": now_iso(), "user": user_identity(user or (actor.name if actor else None)),
                         "action": action, "concept_id": cid, "text": text}
                edits.append(entry)
                atomic_write_jsonl(self.file(layout.EDITS), edits)
                concepts = self._replay(edits)
                self._write_concepts(concepts)
        except Timeout as exc:
            raise RunError(f"{self.path}: another session holds the concept lock; try again") from exc
        self.cache.pop("added", None)
        return next(c for c in concepts if c.id == cid)

    def _ensure_added_embedding(self, text: str, encoder) -> None:
        p = layout.added_embedding(self.path, concept_id(text))
        if p.is_file():
            return
        if encoder is None:
            from clustermine.method.encoders import load_encoder  # imports torch (seconds): only when this runs

            encoder = load_encoder(self.meta["encoder"]["spec"])
        if self.meta.get("encoder") and encoder.fingerprint_id != self.meta["encoder"]["fingerprint_id"]:
            raise ClusterMineError("the given encoder is not the one this run was mined with")

        emb = embed_concepts(encoder, [text], self.config.get("template") or encoder.text_template)
        atomic_save_npy(p, emb[0].astype(np.float16))

    def _added_embeddings(self, texts: list[str]) -> np.ndarray:
        rows = []
        for t in texts:
            p = layout.added_embedding(self.path, concept_id(t))
            try:
                rows.append(np.load(p, allow_pickle=False).astype(np.float32))
            except (OSError, ValueError) as exc:
                raise RunError(f"{p}: embedding of added concept {t!r} is missing or corrupt") from exc
        dim = self.text_embeddings().shape[1]
        return np.stack(rows) if rows else np.zeros((0, dim), dtype=np.float32)

    def vocabulary(self, concepts: list[Concept] | None = None) -> tuple[list[str], np.ndarray, np.ndarray]:
        """Full vocabulary (corpus + user concepts outside it), the extra embeddings float32 [E, D],
        and the vocabulary rows (int64, ascending) of the positive concepts."""
        concepts = concepts if concepts is not None else self.concepts()
        base = self.vocabulary_base()
        extra_texts = [c.text for c in concepts if c.corpus_index is None]
        extra_emb = self._added_embeddings(extra_texts)
        extra_row = {t: len(base) + j for j, t in enumerate(extra_texts)}
        pos_rows = np.array(sorted({c.corpus_index if c.corpus_index is not None else extra_row[c.text]
                                    for c in concepts if c.is_positive}), dtype=np.int64)
        return base + extra_texts, extra_emb, pos_rows

    def mined_positive_rows(self) -> np.ndarray:
        """Vocabulary rows (int64, ascending) of the concepts as mined, before any edit."""
        return np.array(sorted({m.index for m in self.mined_concepts()}), dtype=np.int64)

    def positive_concepts(self) -> list[str]:
        """Y_pos now (mined, accepted and added concepts; rejected ones excluded)."""
        return [c.text for c in self.concepts() if c.is_positive]


# ----------------------------------------------------------------------------- stability support
def support_labels(run: RunStore) -> tuple[np.ndarray | None, str | None]:
    """(int64 [S, N_ok] labels, "heads" | "seeds"), or (None, None) when the run stores neither
    (an older run, or k-means before ``clustermine stability``)."""
    n = run.cluster_ids().shape[0]
    for name, source in ((layout.HEAD_LABELS, "heads"), (layout.SEED_LABELS, "seeds")):
        p = run.file(name)
        if not p.is_file():
            continue
        try:
            arr = np.load(p, allow_pickle=False).astype(np.int64)
        except (OSError, ValueError, EOFError) as exc:
            raise RunError(f"{p}: corrupt ({exc})") from exc
        if arr.ndim != 2 or arr.shape[1] != n:
            raise RunError(f"{p}: shape {arr.shape} does not match the run's {n} images")
        return arr, source
    return None, None


def _support_table(run: RunStore) -> tuple[dict[int, int], int, str | None]:
    stamp = tuple(layout.file_stamp(run.file(n)) for n in (layout.HEAD_LABELS, layout.SEED_LABELS,
                                                          layout.EXCLUSIONS, layout.VOTES, layout.CLUSTER_IDS))
    cached = run.cache.get("support")
    if cached is not None and cached[0] == stamp:
        return cached[1]
    labels, source = support_labels(run)
    if labels is None:
        table: tuple[dict[int, int], int, str | None] = ({}, 0, None)
    else:
        top_idx, top_sim = run.votes()
        excluded = run.excluded_mask() if hasattr(run, "excluded_mask") else np.zeros(labels.shape[1], bool)
        winners = clustering_winners(labels, top_idx[:, 0], top_sim[:, 0], len(run.vocabulary_base()), ~excluded)
        table = (support_counts(winners), labels.shape[0], source)
    run.cache["support"] = (stamp, table)
    return table


def attach_support(run: RunStore, concepts: list[Concept]) -> None:
    """Fill ``support`` / ``support_count`` / ``support_total`` of ``concepts`` in place (left None
    when the run stores no head or seed labels, and for user concepts outside the corpus)."""
    try:
        counts, total, _ = _support_table(run)
    except (RunError, OSError):
        return  # an incomplete run: stability unknown, the concept table still opens
    if not total:
        return
    for c in concepts:
        if c.corpus_index is None:
            continue
        c.support_count = counts.get(c.corpus_index, 0)
        c.support_total = total
        c.support = c.support_count / total
