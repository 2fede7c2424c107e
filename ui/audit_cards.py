"""One audit card per cluster: votes, purity, entropy, size, alerts, typical and atypical members."""

from __future__ import annotations

import streamlit as st

from clustermine.workflows import clusterview
from clustermine.workflows.clusterview import ClusterName
from clustermine.method.mining import ClusterStats, shared_winners
from clustermine.store import Run

from . import charts, identity, rundata, widgets
from .text import md_escape

SORTS = {
    "purity (lowest first)": (lambda s: (s.purity, s.cluster)),
    "entropy (highest first)": (lambda s: (-s.entropy, s.cluster)),
    "size (smallest first)": (lambda s: (s.size, s.cluster)),
    "size (largest first)": (lambda s: (-s.size, s.cluster)),
    "margin to runner-up (smallest first)": (lambda s: (s.margin, s.cluster)),
    "cluster id": (lambda s: s.cluster),
}
BY_CONCEPT = "concept (clusters sharing one together)"


def sort_stats(stats: list[ClusterStats], key: str, vocab: list[str] | None = None) -> list[ClusterStats]:
    """Cards in the order of ``key``; BY_CONCEPT groups the clusters won by one concept (groups of
    several clusters first, then by concept text)."""
    if key != BY_CONCEPT:
        return sorted(stats, key=SORTS[key])
    groups = shared_winners(stats)

    def concept_key(s: ClusterStats):
        text = vocab[s.winner] if (vocab is not None and s.winner is not None) else ""
        return (s.winner is None, -len(groups.get(s.winner, [s.cluster])), text, s.winner or 0, s.cluster)
    return sorted(stats, key=concept_key)


def shared_groups(stats: list[ClusterStats], vocab: list[str]) -> None:
    """One line per concept that wins several clusters (normal when a class is split in clusters)."""
    groups = shared_winners(stats)
    if not groups:
        return
    with st.expander(f"Concepts won by several clusters ({len(groups)})", expanded=False):
        st.caption("Normal when C is above the number of classes (a class is split in several clusters). "
                   "A card gets an alert only where the shared concept is weak (purity under half of its best "
                   "purity in another cluster).")
        for w, clusters in sorted(groups.items(), key=lambda t: (-len(t[1]), vocab[t[0]])):
            st.markdown(f"- **{md_escape(vocab[w])}**: clusters {', '.join(map(str, clusters))}")


def exclude_images(run_path: str, rows: list[int], restore: bool = False) -> None:
    """Mark feature ``rows`` "not ID" (or restore them) in the run's exclusion log; the outcome is
    shown by :func:`exclusion_feedback` on the next script run (callbacks cannot draw)."""
    from clustermine.core.errors import ClusterMineError

    from . import cache
    from .concept_review import reviewer

    try:
        changed = cache.load_run(run_path).set_excluded(rows, restore=restore, actor=reviewer())
        verb = "restored" if restore else "marked not ID"
        st.session_state["exclusion_ok"] = f"{len(changed)} image(s) {verb}; re-mine on the Cluster audit page to apply"
    except ClusterMineError as exc:
        st.session_state["exclusion_error"] = str(exc)


def exclusion_feedback() -> None:
    err, ok = st.session_state.pop("exclusion_error", None), st.session_state.pop("exclusion_ok", None)
    if err:
        widgets.show_error(err)
    elif ok:
        st.toast(md_escape(ok), icon=":material/block:")


def remine_panel(run: Run) -> None:
    """Excluded images, the re-mine button (reuse clusters or re-cluster) and the last re-mine's changes."""
    from clustermine.workflows.remine import last_changes, remine

    from .concept_review import reviewer

    excluded = run.excluded_mask()
    changes = last_changes(run)
    if changes:
        with st.container(border=True, key="remine-changes"):
            st.markdown(f"**Changes since last mining** ({md_escape(changes['mode'])}, "
                        f"{changes['n_excluded']} image(s) excluded, by {md_escape(changes['user'])})")
            st.markdown(f"- Y_pos added: {md_escape(', '.join(changes['y_pos_added']) or '–')}\n"
                        f"- Y_pos removed: {md_escape(', '.join(changes['y_pos_removed']) or '–')}\n"
                        f"- clusters affected: {', '.join(map(str, changes['clusters_affected'])) or '–'}")
            for d in changes["decisions_not_applying"]:
                st.caption(f":material/info: no longer applies: {md_escape(d['action'])} of "
                           f"**{md_escape(d['concept'])}** by {md_escape(d['user'] or '?')} (concept no longer mined)")
    if not excluded.any() and not changes:
        return
    no_exclude = identity.role_block("exclude")
    with st.expander(f"Excluded images ({int(excluded.sum())}) and re-mining", expanded=bool(excluded.any())):
        rows = [int(r) for r in excluded.nonzero()[0]]
        shown = rows[:24]
        widgets.thumbnail_grid(list(zip(rundata.paths_for_rows(run, shown), rundata.image_names(run, shown))),
                               columns=8, empty="no image excluded")
        if rows:
            st.button("Restore all", key="restore_all", icon=":material/undo:", disabled=bool(no_exclude),
                      help=no_exclude, on_click=exclude_images, args=(str(run.path), rows, True))
        mode = st.radio("Re-mine", ["reuse", "recluster"], horizontal=True, key="remine_mode",
                        format_func={"reuse": "reuse the clusters minus excluded images",
                                     "recluster": "re-cluster the remaining images"}.get)
        no_remine = identity.role_block("remine")
        if st.button("Re-mine now", type="primary", key="remine_go", icon=":material/refresh:",
                     disabled=bool(no_remine), help=no_remine):
            with st.spinner("Re-mining (no re-encoding)…"), widgets.guard("re-mining"):
                remine(run, recluster=mode == "recluster", actor=reviewer())
                st.rerun()


def card(run: Run, s: ClusterStats, alerts: list[str], vocab: list[str], n_thumbs: int = 6, top: int = 8,
         shared_with: list[int] | None = None, single_head: bool = False, name: ClusterName | None = None) -> None:
    """One cluster's card. ``name``: the cluster's name (:func:`clustermine.workflows.clusterview.cluster_names`);
    None names it by its winner."""
    winner = vocab[s.winner] if s.winner is not None else None
    name = name or ClusterName(s.cluster, winner, "mined" if winner is not None else "empty")
    with st.container(border=True, key=f"card-{s.cluster}"):
        if name.rejected:
            st.subheader(f"Cluster {s.cluster} · ~~{md_escape(name.concept)}~~ (rejected)", anchor=False)
            st.badge("its concept was rejected: a negative now", icon=":material/close:", color="red")
        else:
            st.subheader(f"Cluster {s.cluster} · {md_escape(name.label)}", anchor=False)
        if single_head:
            st.badge("elected by one head only", icon=":material/warning:", color="orange")
        left, right = st.columns([1.25, 1])  # room for three metric tiles ("entropy" was cut at 1280 px)
        with left:
            widgets.metrics_row([("size", s.size), ("purity", widgets.fmt_pct(s.purity, 0), "winner votes / size"),
                                 ("entropy", widgets.fmt_float(s.entropy, 2), "normalised vote entropy (0 = unanimous)")])
            if s.runner_up is not None:
                st.caption(f"runner-up: **{md_escape(vocab[s.runner_up])}** · margin {s.margin:.0%} of the cluster")
            if shared_with:
                st.caption(f":material/link: same concept as cluster(s) {', '.join(map(str, shared_with))}")
            if alerts:
                st.warning("\n".join(f"- {md_escape(a, None)}" for a in alerts), icon=":material/warning:")
            if not alerts and s.size:
                st.caption(":green[:material/verified: no alert]")
        with right:
            hist = s.histogram[:top]
            if hist:
                fig = charts.vote_histogram([vocab[h[0]] for h in hist], [int(h[1]) for h in hist],
                                            height=70 + 26 * len(hist))
                st.plotly_chart(fig, width="stretch", key=f"hist-{s.cluster}", config={"displayModeBar": False})
                if len(s.histogram) > top:
                    st.caption(f"and {len(s.histogram) - top} other concept(s) with fewer votes")
        typical, atypical = rundata.typical_atypical(run, s.cluster, n_thumbs)
        pending = s.size - len(clusterview.cluster_members(run, s.cluster))  # excluded since the last mining
        if pending > 0:
            st.caption(f":material/block: {pending} member(s) marked not ID are hidden here; re-mine to update "
                       "the votes and size.")
        shown = [*typical, *atypical]
        names = dict(zip(shown, rundata.image_names(run, shown)))
        cells = [(path, names[r]) for path, r in zip(rundata.paths_for_rows(run, shown), shown)]
        st.markdown("**Most typical** (closest to the centroid)")
        widgets.thumbnail_grid(cells[:len(typical)], columns=n_thumbs, empty="empty cluster")
        if atypical:
            st.markdown("**Most atypical** (farthest from the centroid — possible contaminants)")
            widgets.thumbnail_grid(cells[len(typical):], columns=n_thumbs)
        members = list(dict.fromkeys([*atypical, *typical]))
        if members:
            c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
            picked = c1.multiselect("Mark as not ID (contaminants)", members, key=f"excl-pick-{s.cluster}",
                                    format_func=lambda r: names[r])
            blocked = identity.role_block("exclude")
            c2.button("Exclude", key=f"excl-go-{s.cluster}", icon=":material/block:",
                      disabled=not picked or bool(blocked), help=blocked,
                      on_click=exclude_images, args=(str(run.path), [int(r) for r in picked]))
