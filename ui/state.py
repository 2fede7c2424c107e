"""The selected run: session state holds its id, the URL (``?run=<id>``) makes it refresh-proof.

Rule: a ``run`` query parameter always wins (a refresh, a shared link or a hand-edited URL); when
the URL has none (page navigation can drop it), the session's run id is written back into it.
Session state holds ids and UI preferences only; everything durable is in the run directory.
"""

from __future__ import annotations

import contextlib
import runpy
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from clustermine.core.errors import ClusterMineError, SafetyError
from clustermine.store import layout
from clustermine.workflows.uploads import check_run_id

from . import settings

RUN_KEY = "run_id"
SELECT_KEY = "run_select"
NEW_RUN = "__new__"
#: The session key of the target ID true-positive rate the Scoring page and the what-if panel share.
TPR_KEY = "tpr"


@dataclass
class RunRef:
    """The run the user asked for: its id, folder and, when unusable, why."""

    run_id: str | None
    path: Path | None
    error: str | None = None


_frame = threading.local()  # how many app.py frames enclose the code running on this script thread


@contextlib.contextmanager
def frame() -> Iterator[None]:
    """Mark the enclosed code (app.py's body) as running inside the app frame."""
    _frame.depth = getattr(_frame, "depth", 0) + 1
    try:
        yield
    finally:
        _frame.depth -= 1


def ensure_frame() -> None:
    """Make sure the page runs inside app.py's frame (navigation, sidebar, query-param sync).

    Why this exists (Streamlit 1.67; no supported switch avoids it while the page scripts live in a
    top-level ``pages/`` folder next to app.py, which the project layout requires):

    - Streamlit decides "legacy ``pages/``-folder app" from the mere existence of
      ``<entrypoint dir>/pages``, once per process (``PagesManager.__init__``), and AppTest resets that
      decision before *every* ``run()``. No config option turns it off.
    - In that mode a script run for ``/concepts`` executes ``pages/concepts.py`` alone
      (``script_runner._mpa_v1``): app.py, hence ``st.navigation``, the sidebar and the ``?run=`` sync,
      does not run. Only a call of ``st.navigation`` ends the mode, for the rest of the process. So a
      server's first request, if it is a deep link, and every AppTest run of a page, come here frameless.
    - ``st.switch_page`` to app.py would cost extra script runs, lose the page the link asked for (app.py
      would open its default page unless told again) and lose the return values of ``st.button`` in
      the interrupted run (``if st.button("Launch mining")``): under AppTest every click.
    - Keeping the page files elsewhere and pointing ``st.Page`` at them would be supported, but
      ``pages/`` is part of the requested layout.

    So, using public behaviour only: app.py marks its body with :func:`frame`; a page that finds no
    frame around it runs app.py itself, in the same script run (widget events are kept). app.py calls
    ``st.navigation`` (which ends the legacy mode), draws the frame and, through ``nav.run()``, this
    page; the outer, frameless execution then stops.
    """
    if getattr(_frame, "depth", 0):
        return
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
    if run_id != st.session_state.get(RUN_KEY):
        forget_ood_sample()  # an OOD sample belongs to the run it was chosen for
    st.session_state[RUN_KEY] = run_id
    if run_id:
        st.query_params["run"] = run_id
    elif "run" in st.query_params:
        del st.query_params["run"]


# ---------------------------------------------------------------------- reviewer and OOD sample in the URL
# Same rule as the run id: a query parameter wins (refresh, shared link); without one, the session's
# value is written back. Kept under their own (non-widget) session keys, because Streamlit drops a
# widget's state on pages that do not draw that widget.
REVIEWER_QP, REVIEWER_KEY = "reviewer", "_reviewer_keep"
OOD_QP, OOD_KEY = "ood", "whatif_ood"  # session value: {"run": run_id, "folder": str}


def sync_sticky() -> None:
    """Reconcile the reviewer name and the OOD sample with the URL (call after :func:`sync_from_query`)."""
    name = st.query_params.get(REVIEWER_QP)
    if name:
        st.session_state[REVIEWER_KEY] = name[:100]
    elif st.session_state.get(REVIEWER_KEY):
        st.query_params[REVIEWER_QP] = st.session_state[REVIEWER_KEY]
    rid = st.session_state.get(RUN_KEY)
    folder = st.query_params.get(OOD_QP)
    sample = st.session_state.get(OOD_KEY)
    if folder and rid and not (sample and sample.get("run") == rid and sample.get("folder") == folder):
        if ood_folder_allowed(rid, folder):
            st.session_state[OOD_KEY] = {"run": rid, "folder": folder}
        else:
            del st.query_params[OOD_QP]
    elif not folder and sample and sample.get("run") == rid:
        st.query_params[OOD_QP] = sample["folder"]


def ood_folder_allowed(run_id: str, folder: str) -> bool:
    """A folder from the URL may be scored only when it is inside the allowed data folders or is the
    run's own uploaded OOD sample (a URL is user input)."""
    from clustermine.workflows.uploads import resolve_in_roots

    try:
        check_run_id(run_id)
        if Path(folder) == layout.ood_sample_dir(settings.runs_root() / run_id):
            return True
        resolve_in_roots(folder, settings.data_roots())
        return True
    except (ClusterMineError, OSError, ValueError):
        return False


def remember_reviewer() -> None:
    """on_change of the reviewer text box: keep the name in the session and the URL."""
    name = (st.session_state.get("reviewer") or "").strip()[:100]
    st.session_state[REVIEWER_KEY] = name
    if name:
        st.query_params[REVIEWER_QP] = name
    elif REVIEWER_QP in st.query_params:
        del st.query_params[REVIEWER_QP]


def restore_reviewer() -> None:
    """Before the reviewer text box is drawn: give it the remembered name."""
    if "reviewer" not in st.session_state and st.session_state.get(REVIEWER_KEY):
        st.session_state["reviewer"] = st.session_state[REVIEWER_KEY]


def remember_ood_sample(run_id: str, folder: str) -> None:
    st.session_state[OOD_KEY] = {"run": run_id, "folder": folder}
    st.query_params[OOD_QP] = folder


def forget_ood_sample() -> None:
    st.session_state.pop(OOD_KEY, None)
    if OOD_QP in st.query_params:
        del st.query_params[OOD_QP]


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
    """The selected :class:`~clustermine.store.Run`, or an explanatory empty state and ``st.stop()``.

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
