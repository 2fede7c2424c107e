"""Shared helpers of the evaluation benchmarks (issue 4): data sets, features, methods, tables.

Everything here is deterministic: splits are defined by sorted file names (see ``SPLITS`` in
``eval_ood.py``), seeds only drive the clusterers and the random-concept sanity baseline.
Features come from the engine's content-addressed FeatureCache, so re-running a benchmark only
re-encodes images that are not cached yet.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("CLUSTERMINE_CACHE", str(ROOT / ".cache" / "clustermine"))
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from clustermine.core.linalg import l2_normalize as l2n  # noqa: E402,F401  (used as common.l2n)

DATA = Path(os.environ.get("CLUSTERMINE_DATA", ROOT.parent / "shared" / "data"))
RESULTS = ROOT / "bench" / "results"


# ----------------------------------------------------------------------------- machine
def machine_info() -> dict:
    """nproc, CPU model, RAM, torch / numpy versions, date: printed with every table."""
    import torch

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                ram = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return {
        "date": _dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "ram_gib": ram,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "numpy": np.__version__,
        "python": platform.python_version(),
        "cuda": bool(torch.cuda.is_available()),
    }


def machine_line(info: dict | None = None) -> str:
    info = info or machine_info()
    return (f"{info['date']}; {info['nproc']} CPU cores ({info['cpu']}), {info['ram_gib']} GiB RAM, "
            f"torch {info['torch']} ({info['torch_threads']} threads), numpy {info['numpy']}, "
            f"CUDA: {'yes' if info['cuda'] else 'no'}")


# ----------------------------------------------------------------------------- encoder / features
_ENCODER = None


def encoder():
    global _ENCODER
    if _ENCODER is None:
        from clustermine.method.encoders import load_encoder

        _ENCODER = load_encoder("offline", device="cpu")
    return _ENCODER


def folder_records(rel: str, per_class: int | None = None) -> list:
    """The readable image records of ``DATA/rel`` in scan order (sorted relative paths).

    ``per_class``: keep only the first ``per_class`` files (file-name order) of every class folder.
    """
    from clustermine.method.images import scan_images

    recs = [r for r in scan_images(DATA / rel) if r.status == "ok"]
    if per_class is not None:
        groups: dict[str, list] = {}
        for r in recs:
            groups.setdefault(r.path.split("/", 1)[0], []).append(r)
        recs = [r for g in groups.values() for r in sorted(g, key=lambda r: r.path)[:per_class]]
        recs.sort(key=lambda r: r.path)
    return recs


def folder_features(rel: str, per_class: int | None = None) -> tuple[list[str], np.ndarray]:
    """(relative paths sorted as scanned, features float32 [n, D]) of ``DATA/rel`` (cached).

    ``per_class``: as in :func:`folder_records` (only those files are encoded).
    """
    from clustermine.workflows.pipeline import FeatureCache, encode_records

    recs = folder_records(rel, per_class)
    feats, _ = encode_records(encoder(), recs, cache=FeatureCache(encoder().fingerprint_id))
    recs = [r for r in recs if r.status == "ok"]
    return [r.path for r in recs], np.asarray(feats, dtype=np.float32)


def by_class(paths: list[str]) -> dict[str, list[int]]:
    """Row indices per top-level class folder, rows in file-name order."""
    out: dict[str, list[int]] = {}
    for i, p in enumerate(paths):
        out.setdefault(p.split("/", 1)[0], []).append(i)
    for k in out:
        out[k].sort(key=lambda i: paths[i])
    return out


# ----------------------------------------------------------------------------- corpus
_CORPORA: dict = {}


def corpus_and_embeddings(spec: str = "wordnet-nouns", template: str | None = None, subsample: float | None = None):
    """(Corpus, text embeddings float32 [M, D]).

    The 117,798-noun corpus with the encoder's template comes from the engine's cache
    (``corpus_embeddings``). Other corpora / templates are assembled to save CPU time: strings
    already embedded (same template) are taken from the noun matrix, only new strings are embedded
    with the engine's ``embed_concepts`` (one text = one embedding; batching only pads), and the
    result is kept in ``.cache/bench_text`` (not in the engine's cache). ``subsample``: a fixed
    (seed 0) random fraction of the corpus, original order kept.
    """
    from clustermine.method.corpus import Corpus, corpus_embeddings, embed_concepts, load_corpus

    key = (spec, template, subsample)
    if key in _CORPORA:
        return _CORPORA[key]
    enc = encoder()
    corpus = load_corpus(spec)
    if subsample:
        rng = np.random.default_rng(0)
        keep = np.sort(rng.permutation(len(corpus))[: int(round(subsample * len(corpus)))])
        corpus = Corpus(spec=f"{spec}@{subsample}", concepts=tuple(corpus.concepts[i] for i in keep))
    tmpl = template or enc.text_template
    if spec == "wordnet-nouns" and tmpl == enc.text_template and not subsample:
        emb, _ = corpus_embeddings(enc, corpus, tmpl)
        _CORPORA[key] = (corpus, np.asarray(emb, dtype=np.float32))
        return _CORPORA[key]
    import hashlib

    h = hashlib.sha1(f"{enc.fingerprint_id}|{corpus.digest}|{tmpl}".encode()).hexdigest()[:16]
    path = ROOT / ".cache" / "bench_text" / f"{h}.npy"
    if path.is_file():
        emb = np.load(path).astype(np.float32)
    else:
        emb = np.zeros((len(corpus), enc.dim), dtype=np.float32)
        have = np.zeros(len(corpus), dtype=bool)
        if tmpl == enc.text_template:
            base, base_emb = corpus_and_embeddings("wordnet-nouns")
            idx = base.index()
            for i, c in enumerate(corpus.concepts):
                j = idx.get(c)
                if j is not None:
                    emb[i] = base_emb[j]
                    have[i] = True
        todo = np.flatnonzero(~have)
        if todo.size:
            t0 = time.perf_counter()
            emb[todo] = embed_concepts(enc, [corpus.concepts[i] for i in todo], tmpl)
            print(f"embedded {todo.size} new strings for {spec} / {tmpl!r} in {time.perf_counter() - t0:.0f}s", flush=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, emb.astype(np.float16))
    _CORPORA[key] = (corpus, emb)
    return _CORPORA[key]


# ----------------------------------------------------------------------------- clustering
def n_clusters_default(n: int) -> int:
    """The engine's default C rule (does not look at the true class count)."""
    try:
        from clustermine.method.clustering import clamp_n_clusters, default_n_clusters

        c, _ = clamp_n_clusters(default_n_clusters(n), n)
        return int(c)
    except ImportError:
        raise


def cluster(X: np.ndarray, method: str, C: int, seed: int) -> np.ndarray:
    """Cluster ids [N]; ``make_clusterer`` from the engine (TEMI defaults / k-means)."""
    import hashlib

    from clustermine.method.clustering import make_clusterer

    if C <= 1:
        return np.zeros(X.shape[0], dtype=np.int64)
    # The same clustering is reused by every ablation that does not change it (tau, corpus,
    # template, negatives): cached on disk by (features, method, C, seed).
    h = hashlib.sha1(np.ascontiguousarray(X, dtype=np.float32).tobytes()).hexdigest()[:16]
    path = ROOT / ".cache" / "bench_clusters" / f"{h}-{method}-{C}-{seed}.npy"
    if path.is_file():
        LAST_FIT_S[0] = json.loads(path.with_suffix(".json").read_text())["fit_s"]
        return np.load(path)
    t0 = time.perf_counter()
    kw = {"n_threads": 1} if method == "temi" else {}  # 1 thread: the shared 2-core machine is oversubscribed
    ids = np.asarray(make_clusterer(method, C, seed=seed, **kw).fit_predict(X), dtype=np.int64)
    LAST_FIT_S[0] = time.perf_counter() - t0
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, ids)
    path.with_suffix(".json").write_text(json.dumps({"fit_s": LAST_FIT_S[0]}))
    return ids


LAST_FIT_S = [0.0]  # fit time of the last clustering (as measured when it was first computed)


# ----------------------------------------------------------------------------- results io
def run_fresh(code: str, env_extra: dict | None = None, timeout: int = 1800) -> dict:
    """Run python ``code`` in a fresh process (``bench/`` and the project on sys.path; ``json``,
    ``resource``, ``sys``, ``time``, ``os`` imported). The code must fill a dict ``out``; returns it with
    ``max_rss_mb`` (peak RSS of that process) and ``process_wall_s`` added."""
    env = dict(os.environ, **(env_extra or {}))
    wrapper = (
        "import json, resource, sys, time, os\n"
        f"sys.path.insert(0, {str(ROOT / 'bench')!r}); sys.path.insert(0, {str(ROOT)!r})\n" + code +
        "\nout['max_rss_mb'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024\nprint(json.dumps(out))\n")
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", wrapper], capture_output=True, text=True, env=env, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(p.stderr[-3000:])
    out = json.loads(p.stdout.strip().splitlines()[-1])
    out["process_wall_s"] = time.perf_counter() - t0
    return out


def save_json(name: str, obj) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    p = RESULTS / name
    p.write_text(json.dumps(obj, indent=1, default=float))
    return p


def load_json(name: str):
    p = RESULTS / name
    return json.loads(p.read_text()) if p.is_file() else None


def mean_std(vals) -> str:
    v = np.asarray([x for x in vals if x is not None], dtype=float)
    if v.size == 0:
        return "—"
    if v.size == 1:
        return f"{v[0]:.1f}"
    return f"{v.mean():.1f} ± {v.std(ddof=0):.1f}"


class Timer:
    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *a):
        self.s = time.perf_counter() - self.t0


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ----------------------------------------------------------------------------- BENCHMARKS.md
BENCH_MD = ROOT / "BENCHMARKS.md"
SECTION_ORDER = ("## Evaluation (issue 4)", "## Engine benchmarks", "## Performance and scaling")


def write_block(section: str, key: str, text: str, path: Path = BENCH_MD) -> None:
    """Replace (or add) the block ``<!-- bench:key -->..<!-- /bench:key -->`` inside ``section``.

    Other sections of BENCHMARKS.md (written by other people) are never touched; the section is
    appended at the end of the file when it does not exist yet.
    """
    start, end = f"<!-- bench:{key} -->", f"<!-- /bench:{key} -->"
    block = f"{start}\n{text.rstrip()}\n{end}"
    doc = path.read_text(encoding="utf-8") if path.is_file() else "# Benchmarks\n"
    if start in doc and end in doc:
        a, b = doc.index(start), doc.index(end) + len(end)
        doc = doc[:a] + block + doc[b:]
    else:
        lines = doc.splitlines()
        try:
            h = next(i for i, ln in enumerate(lines) if ln.strip() == section)
        except StopIteration:
            lines += ["", section, ""]
            h = len(lines) - 2
        # end of the section = next "## " heading
        e = next((i for i in range(h + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        while e > h + 1 and not lines[e - 1].strip():
            e -= 1
        lines[e:e] = ["", block, ""]
        doc = "\n".join(lines)
    path.write_text(doc.rstrip() + "\n", encoding="utf-8")


# ----------------------------------------------------------------------------- WordNet synonyms
_WN_SYN: dict | None = None


def wordnet_synonyms(name: str) -> set[str]:
    """All noun lemmas sharing a WordNet synset with ``name`` (normalised: lowercase, spaces)."""
    global _WN_SYN
    from clustermine.method.corpus import find_wordnet, normalize_concept

    if _WN_SYN is None:
        src = find_wordnet()
        lemmas_of: dict[str, list[str]] = {}
        for line in src.lines("data.noun"):
            if not line or line.startswith("  "):
                continue
            f = line.split(" ")
            cnt = int(f[3], 16)
            lemmas_of[f[0]] = [normalize_concept(f[4 + 2 * j]) for j in range(cnt)]
        syn: dict[str, set[str]] = {}
        for line in src.lines("index.noun"):
            if not line or line.startswith("  "):
                continue
            f = line.split()
            lemma = normalize_concept(f[0])
            n_syn = int(f[2])
            for off in f[-n_syn:]:
                syn.setdefault(lemma, set()).update(lemmas_of.get(off, []))
        _WN_SYN = syn
    n = normalize_concept(name)
    return _WN_SYN.get(n, set()) | {n}
