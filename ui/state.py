"""The selected run: session state holds its id, the URL (``?run=<id>``) makes it refresh-proof.

Rule: a ``run`` query parameter always wins (a refresh, a shared link or a hand-edited URL); when
the URL has none (page navigation can drop it), the session's run id is written back into it.
Session state holds ids and UI preferences only; everything durable is in the run directory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from clustermine.errors import ClusterMineError, SafetyError
from clustermine.rundir import layout
from clustermine.uploads import check_run_id

from . import settings

RUN_KEY = "run_id"
SELECT_KEY = "run_select"
NEW_RUN = "__new__"


@dataclass
class RunRef:
    """The run the user asked for: its id, folder and, when unusable, why."""

    run_id: str | None
    path: Path | None
    error: str | None = None


def ensure_frame() -> None:
    """Make sure the page runs inside app.py's frame (navigation, sidebar, query-param sync).

    Streamlit starts each script run in its legacy ``pages/``-folder mode until app.py has called
    ``st.navigation`` (always for AppTest, once per process for a server): a deep link such as
    ``/concepts?run=...`` would then run the page file alone. In that case app.py runs here, in
    the same script run (widget events are kept), drawing the frame and this page; the outer,
    frameless execution then stops.
    """
    from streamlit.runtime.pages_manager import PagesManager

    if not PagesManager.uses_pages_directory:
        return
    PagesManager.uses_pages_directory = False
    import runpy

    runpy.run_path(str(Path(__file__).resolve().parents[1] / "app.py"), run_name="__clustermine_frame__")
    st.stop()


def sync_from_query() -> None:
    """Reconcile session state and the URL at the top of every script run."""
    qp = st.query_params.get("run")
    if qp:
        st.session_state[RUN_KEY] = qp
    else:
        st.session_state.setdefault(RUN_KEY, None)
        rid = st.session_state[RUN_KEY]
        if rid:
            st.query_params["run"] = rid


def set_run(run_id: str | None) -> None:
    """Select a run (None = the new-run form) in the session and the URL."""
    st.session_state[RUN_KEY] = run_id
    if run_id:
        st.query_params["run"] = run_id
    elif "run" in st.query_params:
        del st.query_params["run"]


def current() -> RunRef:
    """The selected run reference (no run = ``RunRef(None, None)``); ids are validated here."""
    rid = st.session_state.get(RUN_KEY)
    if not rid:
        return RunRef(None, None)
    try:
        check_run_id(rid)
    except SafetyError as exc:
        return RunRef(rid, None, str(exc))
    path = settings.runs_root() / rid
    if not path.is_dir():
        return RunRef(rid, None, f"run {rid!r} not found under {settings.runs_root()}")
    if not layout.meta_path(path).is_file():
        return RunRef(rid, path, f"{layout.meta_path(path)}: missing; {path} is not a ClusterMine run folder")
    return RunRef(rid, path)


def require_run(*, done: bool = True):
    """The selected :class:`~clustermine.runs.Run`, or an explanatory empty state and ``st.stop()``.

    With ``done`` the run must have finished mining and hold all its files (a missing or corrupt
    file is named in an error box).
    """
    from . import cache, widgets

    ref = current()
    if ref.run_id is None:
        widgets.empty_state("No run selected — create one on the Data page, or pick one in the sidebar.",
                            link=("pages/data.py", "Go to Data & encoding", ":material/add_photo_alternate:"))
        st.stop()
    if ref.error:
        widgets.show_error(ref.error)
        st.stop()
    try:
        run = cache.load_run(ref.path)
    except ClusterMineError as exc:
        widgets.show_error(exc)
        st.stop()
    if done and run.status != "done":
        widgets.empty_state(f"Run {ref.run_id!r} is {run.status}: its results appear here once mining has "
                            "finished.", link=("pages/data.py", "See its progress on the Data page",
                                               ":material/monitoring:"))
        st.stop()
    if done:
        try:
            cache.check_complete(run)
        except ClusterMineError as exc:
            widgets.show_error(exc)
            st.stop()
    return run
