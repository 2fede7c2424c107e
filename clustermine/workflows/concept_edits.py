"""Concept decisions on a run: accept, reject, restore, add, or set a status.

The run store only logs and replays the decisions (:mod:`clustermine.store.concepts`); what needs a
model lives here: a concept the user adds from outside the corpus is embedded with the run's encoder
(text tower, the run's prompt template) and stored in the run before the edit is logged. The app's
Concepts page and ``clustermine concepts`` both call :func:`edit_concept` / :func:`set_concept_status`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from clustermine.core.errors import ClusterMineError
from clustermine.core.identity import Actor
from clustermine.core.roles import require
from clustermine.method.corpus import embed_concepts
from clustermine.method.encoders import load_encoder
from clustermine.store.concepts import Concept, action_for, check_added_text

if TYPE_CHECKING:
    from clustermine.store.run import Run

__all__ = ["edit_concept", "embed_added_concept", "set_concept_status"]


def embed_added_concept(run: Run, key: str, encoder=None) -> None:
    """Embed the user concept ``key`` (when it is outside the corpus and not embedded yet) with
    ``encoder`` — the run's own encoder, loaded from its spec when not given — and store it in the run."""
    text = check_added_text(key)
    if run.has_concept_embedding(text):
        return
    encoder = encoder if encoder is not None else load_encoder(run.encoder_spec)
    template = run.config.get("template") or encoder.text_template
    emb = embed_concepts(encoder, [text], template)[0]
    run.write_added_embedding(text, emb, fingerprint_id=encoder.fingerprint_id)


def edit_concept(run: Run, action: str, key: str, *, encoder=None, user: str | None = None,
                 actor: Actor | None = None) -> Concept:
    """Apply one decision (``accept`` / ``reject`` / ``restore`` by id or text, ``add`` by text) and
    log it, signed by ``actor`` (else ``user``: :func:`clustermine.store.chain.entry_actor`); an added
    concept outside the corpus is embedded first (see :func:`embed_added_concept`). Returns the
    concept as it is now. PermissionDenied before anything is written when ``actor``'s role may not.
    """
    require(actor, "edit_concepts")
    if action == "add":
        if run.status != "done":
            raise ClusterMineError(f"{run.path}: concepts can be edited once mining has finished (status {run.status!r})")
        embed_added_concept(run, key, encoder)
    return run.edit_concept(action, key, user=user, actor=actor)


def set_concept_status(run: Run, key: str, status: str, *, user: str | None = None,
                       actor: Actor | None = None) -> tuple[Concept, str | None]:
    """Give the concept ``key`` (id or text) the status ``status`` through the decision
    :func:`~clustermine.store.concepts.action_for` names (logged like any edit). Returns ``(concept now,
    the action, or None when it already had that status)``; ClusterMineError names an unknown concept
    or status; PermissionDenied (nothing written) when ``actor``'s role may not edit concepts."""
    require(actor, "edit_concepts")
    current = run.find_concept(key)
    if current is None:
        raise ClusterMineError(f"no concept {key!r} in this run (give its id or its text)")
    action = action_for(current.status, status)
    if action is None:
        return current, None
    return edit_concept(run, action, current.id, user=user, actor=actor), action
