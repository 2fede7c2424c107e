"""Cluster audit: one card per cluster (lowest purity first by default) with its vote histogram,
purity, entropy, size, typical and atypical members, and alerts."""

from __future__ import annotations

import math

import streamlit as st

from clustermine.workflows import clusterview
from clustermine.method.mining import cluster_alerts, shared_winners
from ui import audit_cards, purity_panel, state, widgets

state.ensure_frame()
widgets.page_header("Cluster audit", "Check that each cluster names itself well before trusting its concept: "
                    "impure, tied or tiny clusters are flagged.")
run = state.require_run(done=True)
audit_cards.exclusion_feedback()
audit_cards.remine_panel(run)
all_stats = run.cluster_stats()
stats = clusterview.occupied_stats(all_stats)  # empty clusters are mentioned, never audited
alerts = cluster_alerts(stats)
vocab = run.vocabulary_base()
names = clusterview.cluster_names(run)
summary = run.meta.get("summary") or {}

widgets.metrics_row([
    ("clusters", len(stats), clusterview.cluster_count_text(summary) if len(all_stats) > len(stats) else None),
    ("with alerts", len(alerts)),
    ("mean purity", widgets.fmt_pct(summary.get("mean_purity"), 0), "size-weighted"),
    ("mean entropy", widgets.fmt_float(summary.get("mean_entropy"), 2)),
    ("distinct winners", len({s.winner for s in stats if s.winner is not None})),
])
if len(all_stats) > len(stats):
    st.caption(f"{len(all_stats) - len(stats)} of the {len(all_stats)} clusters asked for were left empty by the "
               "clustering; they have no members and no cards.")

purity_panel.folder_labels_section(run)

c1, c2, c3 = st.columns([2, 1.2, 1])
sort_key = c1.selectbox("Sort cards by", [*audit_cards.SORTS, audit_cards.BY_CONCEPT], index=0, key="audit_sort")
only_alerts = c2.toggle("Only clusters with alerts", key="audit_only_alerts")
per_page = int(c3.selectbox("Cards per page", [6, 12, 24, 48], index=1, key="audit_per_page"))

audit_cards.shared_groups(stats, vocab)
shown = audit_cards.sort_stats(stats, sort_key, vocab)
shared = {c: [o for o in cs if o != c] for cs in shared_winners(stats).values() for c in cs}
if only_alerts:
    shown = [s for s in shown if s.cluster in alerts]
if not shown:
    widgets.empty_state("No cluster has an alert.")
    st.stop()
n_pages = max(1, math.ceil(len(shown) / per_page))
page = 1
if n_pages > 1:
    page = int(st.number_input(f"Page (of {n_pages})", min_value=1, max_value=n_pages, value=1, key="audit_page"))
    st.caption(f"clusters {(page - 1) * per_page + 1}–{min(page * per_page, len(shown))} of {len(shown)}")

single = {c.corpus_index for c in run.concepts() if c.single_head}
for s in shown[(page - 1) * per_page: page * per_page]:
    audit_cards.card(run, s, alerts.get(s.cluster, []), vocab, shared_with=shared.get(s.cluster),
                     single_head=s.winner in single, name=names.get(s.cluster))
