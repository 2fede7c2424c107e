"""The new-run form of the Data page: where the ID images come from, the mining options, and the
launch (stage the inputs safely, create the run, start the worker)."""

from __future__ import annotations

from dataclasses import dataclass, field

import streamlit as st

from clustermine.workflows import jobs
from clustermine.core.config import CLUSTERER_NAMES, MineConfig, default_tau
from clustermine.method.corpus import BUILTIN_CORPORA
from clustermine.core.errors import ClusterMineError, SafetyError
from clustermine.workflows.new_run import RunSource, create_run_from_uploads, unique_run_dir
from clustermine.workflows.uploads import (
    SourceCount,
    count_folder,
    count_names,
    count_zip,
    list_subfolders,
    resolve_in_roots,
)

from . import cache, identity, settings, state, widgets
from .text import md_code, md_escape

SOURCES = {"files": "Upload images", "zip": "Upload a zip", "folder": "Folder on this server"}
CUSTOM_CORPUS = "custom"
CLUSTERER_LABELS = {"temi": "TEMI (recommended)", "kmeans": "k-means (fast baseline)"}
DEFAULTS = MineConfig()  # the form starts from the engine's defaults (never repeated here)


@dataclass
class Choices:
    source: str
    files: list = field(default_factory=list)
    zip_file: object | None = None
    folder: str = ""
    encoder: str = DEFAULTS.encoder
    n_clusters: int | None = DEFAULTS.n_clusters
    clusterer: str = DEFAULTS.clusterer
    corpus: str = DEFAULTS.corpus
    corpus_file: object | None = None
    seed: int = DEFAULTS.seed
    holdout: float = DEFAULTS.holdout_fraction
    name: str = ""
    counted: SourceCount | None = None  # what the source holds (source_count), once per script run

    def mine_config(self, corpus: str) -> MineConfig:
        """The run's settings (every other one at the engine's default), resolved (τ concrete)."""
        return MineConfig(encoder=self.encoder or DEFAULTS.encoder, n_clusters=self.n_clusters,
                          clusterer=self.clusterer, corpus=corpus, seed=self.seed,
                          holdout_fraction=self.holdout).validate().resolved()


def _source_inputs(ch: Choices) -> None:
    if ch.source == "files":
        folder_mode = st.toggle("Pick a whole folder (with sub-folders)", key="up_dir_mode",
                                help="Your browser uploads every file of the folder you choose.")
        ch.files = st.file_uploader(
            "ID images", accept_multiple_files="directory" if folder_mode else True,
            key="up_dir" if folder_mode else "up_files",
            help="Any image type PIL reads. Other files are listed as skipped, with the reason.") or []
        if ch.files:
            st.caption(f"{len(ch.files)} file(s) selected, {sum(f.size for f in ch.files) / 2**20:,.1f} MiB")
    elif ch.source == "zip":
        ch.zip_file = st.file_uploader("A zip of your ID images", type=["zip"], key="up_zip",
                                       help="Unpacked safely on the server: path escapes, links and zip bombs "
                                            "are refused. Sub-folders are kept.")
    else:
        roots = settings.data_roots()
        if not roots:
            st.warning("No data folder is configured on this server: set CLUSTERMINE_DATA_ROOTS.")
            return
        st.caption("Allowed data folders: " + ", ".join(md_code(r) for r in roots))
        known = list_subfolders(roots, depth=2)
        pick = st.selectbox("Folder", options=known, index=None, key="src_pick",
                            placeholder="choose a folder, or type a path below")
        typed = st.text_input("…or a path inside the allowed folders", key="src_path",
                              placeholder="e.g. imagenette_train100 or an absolute path")
        ch.folder = typed.strip() or (pick or "")
        if ch.folder:
            try:
                resolved = resolve_in_roots(ch.folder, roots)
                st.caption(f":green[:material/check:] {md_code(resolved)}")
            except SafetyError as exc:
                widgets.show_error(exc)
                ch.folder = ""


def _option_inputs(ch: Choices) -> None:
    c1, c2 = st.columns(2)
    with c1:
        kinds = ["offline", "open_clip"]
        enc_kind = st.radio("Encoder", kinds, horizontal=True, key="enc_kind",
                            index=0 if DEFAULTS.encoder == "offline" else 1,
                            format_func={"offline": "Offline default (no network)", "open_clip": "open_clip"}.get)
        if enc_kind == "open_clip":
            spec = st.text_input("open_clip spec", value="openclip:ViT-B-32:openai", key="enc_spec",
                                 help="openclip:ARCH:TAG, openclip:hf-hub:ORG/REPO, openclip:local-dir:PATH or "
                                      "openclip:ARCH@CHECKPOINT. Weights must be available offline.")
            ch.encoder = spec.strip()
        else:
            ch.encoder = "offline"
        try:
            device = cache.resolved_device("auto")
        except ClusterMineError as exc:
            device = f"unavailable ({exc})"
        st.caption(f"Device: **{md_escape(device)}** (auto) · score temperature τ = "
                   f"{default_tau(ch.encoder)} (this encoder's default)")
        auto = st.checkbox("Number of clusters: automatic", value=DEFAULTS.n_clusters is None, key="c_auto",
                           help="round(sqrt(N/2)), clamped so that each cluster has 5+ members.")
        ch.n_clusters = None if auto else int(st.number_input("Number of clusters C", min_value=1, max_value=2000,
                                                              value=10, step=1, key="c_value"))
        ch.clusterer = st.radio("Clusterer", CLUSTERER_NAMES, index=CLUSTERER_NAMES.index(DEFAULTS.clusterer),
                                format_func=lambda k: CLUSTERER_LABELS.get(k, k), horizontal=True, key="clusterer")
    with c2:
        options = list(BUILTIN_CORPORA) + [CUSTOM_CORPUS]
        ch.corpus = st.selectbox("Concept corpus", options, key="corpus", index=options.index(DEFAULTS.corpus),
                                 format_func=lambda k: f"{k} — {BUILTIN_CORPORA[k]}" if k in BUILTIN_CORPORA
                                 else "my own list (.txt, one concept per line)")
        if ch.corpus == CUSTOM_CORPUS:
            ch.corpus_file = st.file_uploader("Concept list", type=["txt"], key="corpus_file")
        ch.seed = int(st.number_input("Seed", min_value=0, max_value=2**31 - 1, value=DEFAULTS.seed, step=1,
                                      key="seed"))
        ch.holdout = float(st.slider("Held out for calibration", 0.0, 0.5, DEFAULTS.holdout_fraction, 0.05,
                                     key="holdout",
                                     help="Share of ID images kept out of mining to calibrate the threshold "
                                          "(none when fewer than 20 images)."))
        ch.name = st.text_input("Run name (optional)", key="run_name", placeholder="e.g. imagenette-offline-c10")


MAX_COUNTED_FILES = 200_000  # counting a huge server folder for the estimate stops here


def source_count(ch: Choices) -> SourceCount | None:
    """What the chosen source holds (``clustermine.workflows.uploads`` counts by file name; the scan decides for
    real), counted once per script run; None while nothing is chosen."""
    if ch.counted is not None:
        return ch.counted
    if ch.source == "files" and ch.files:
        ch.counted = count_names([getattr(f, "name", "") for f in ch.files])
    elif ch.source == "zip" and ch.zip_file is not None:
        ch.counted = count_zip(ch.zip_file, getattr(ch.zip_file, "name", "the zip"))
    elif ch.source == "folder" and ch.folder:
        try:
            ch.counted = count_folder(resolve_in_roots(ch.folder, settings.data_roots()), MAX_COUNTED_FILES)
        except (OSError, SafetyError) as exc:
            ch.counted = SourceCount(0, str(exc))
    return ch.counted


def _n_images(ch: Choices) -> int:
    """How many image files the chosen source holds (by file name; the scan decides for real)."""
    counted = source_count(ch)
    return counted.n_images if counted is not None else 0


@st.cache_data(ttl=30, show_spinner=False)
def _corpus_cached(encoder_spec: str, corpus: str) -> bool | None:
    """Whether the corpus embedding for this encoder is already cached (None: cannot tell)."""
    from clustermine.workflows.estimate import corpus_cache_state

    if corpus == CUSTOM_CORPUS:
        return False
    try:
        return corpus_cache_state(cache.get_encoder(encoder_spec), corpus)
    except Exception:  # noqa: BLE001 - a bad encoder spec is reported at launch, not here
        return None


def cost_line(ch: Choices) -> str:
    """The pre-launch line: what the job will cost on this machine at its speed now
    (``clustermine.workflows.estimate.estimate_now``: a short probe, reused for a minute)."""
    from clustermine.workflows.estimate import estimate_now

    n = _n_images(ch)
    if n == 0:
        return ""
    runs = cache.list_runs_light(settings.runs_root())
    est = estimate_now(n, ch.clusterer, n_clusters=ch.n_clusters,
                       corpus_cached=_corpus_cached(ch.encoder, ch.corpus), holdout_fraction=ch.holdout)
    line = f"Estimated cost for {n:,} image{'s' if n != 1 else ''}: {est.line()} (rates from {est.source})"
    from clustermine.method.cost import check_clusterer_feasible

    try:
        device = cache.resolved_device("auto")
    except ClusterMineError:
        device = "cpu"
    note = check_clusterer_feasible(ch.clusterer, int(n * (1 - ch.holdout)), device, n_clusters=ch.n_clusters,
                                    runs=runs)
    return f"{line}. {note}" if note else line


def form() -> Choices | None:
    """Draw the form; returns the choices when the user pressed Launch."""
    st.subheader("1 · ID images", anchor=False)
    ch = Choices(source=st.segmented_control("Source", list(SOURCES), format_func=SOURCES.get, default="files",
                                             key="src_kind", required=True) or "files")
    _source_inputs(ch)
    st.subheader("2 · Model and mining", anchor=False)
    _option_inputs(ch)
    counted = source_count(ch)
    ready = counted is not None and counted.n_images > 0  # Launch waits for one usable image, counted
    if ch.corpus == CUSTOM_CORPUS and ch.corpus_file is None:
        ready = False
    if counted is not None and counted.problem:
        st.warning(md_escape(counted.problem, None), icon=":material/block:")
    line = cost_line(ch)
    if line:
        st.info(md_escape(line, None), icon=":material/timer:")
    blocked = identity.role_block("launch")
    if st.button("Launch mining", type="primary", icon=":material/rocket_launch:", disabled=not ready or bool(blocked),
                 key="launch", help=blocked):
        return ch
    if counted is None:
        st.caption("Choose your ID images (and a concept list if you picked your own) to launch.")
    elif not ready:
        st.caption("Launch needs at least one image file" + (" and your concept list." if ch.corpus == CUSTOM_CORPUS
                                                             and ch.corpus_file is None else "."))
    return None


def run_source(ch: Choices) -> RunSource:
    """The engine's description of the chosen source (a server folder confined to the data roots)."""
    return RunSource(ch.source, files=list(ch.files), zip_file=ch.zip_file, folder=ch.folder,
                     roots=settings.data_roots() if ch.source == "folder" else None)


def launch(ch: Choices) -> str:
    """Create the run from the choices (``clustermine.workflows.new_run.create_run_from_uploads``:
    staged first, so a refused upload leaves no half-made run) and start its worker; returns the run id."""
    run_dir = unique_run_dir(settings.runs_root(), ch.name)
    actor = identity.acting()
    create_run_from_uploads(run_dir, ch.mine_config(ch.corpus), run_source(ch),
                            corpus_file=ch.corpus_file if ch.corpus == CUSTOM_CORPUS else None, actor=actor)
    jobs.start_mine_job(run_dir, cancel_at_exit=True, actor=actor)
    return run_dir.name


def new_run_section() -> None:
    """The whole new-run flow: form, launch, then switch the session to the new run."""
    choices = form()
    if choices is None:
        return
    rid = None
    with st.spinner("Saving your images and starting the job…"):
        with widgets.guard("launching the run"):
            rid = launch(choices)
    if rid:
        state.set_run(rid)
        st.rerun()
