"""Concept corpora (WordNet nouns / adjectives, custom lists) and their cached text embeddings.

A corpus is an ordered list of distinct, normalised concept strings. Its text embeddings depend on
the encoder, the prompt template and the corpus itself, so they are cached on disk under a key made
of all three: the first use of the 118K-noun corpus with the offline encoder takes minutes on two CPU
cores (about 90 s quiet; 24 min was seen with the cores shared by many jobs), later uses load the
float16 matrix in 0.15 s (BENCHMARKS.md, engine benchmarks).
"""

from __future__ import annotations

import hashlib
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
from filelock import FileLock

from clustermine.core.errors import CorpusError
from clustermine.core.storage import atomic_save_npy, atomic_write_json, cache_root

ProgressFn = Callable[[int, int], None]

BUILTIN_CORPORA = {
    "wordnet-nouns": "all WordNet 3.0 noun lemmas (~118K)",
    "wordnet-nouns-adjectives": "all WordNet noun and adjective lemmas (~136K)",
    "wordnet-nouns-first-lemma": "the first lemma of every WordNet noun synset (~67K)",
}

_INSTALL_HINT = (
    "WordNet was not found. Install it one of two ways: "
    "(1) `sudo apt-get install wordnet-base` (Debian/Ubuntu; files in /usr/share/wordnet), or "
    "(2) `python -c \"import nltk; nltk.download('wordnet')\"` (needs internet). "
    "Or point CLUSTERMINE_WORDNET at a folder holding index.noun / data.noun."
)
_MARKER = re.compile(r"\((a|p|ip)\)$")
_SPACES = re.compile(r"\s+")


def normalize_concept(text: str) -> str:
    """Lowercase, underscores to spaces, adjective markers removed, whitespace collapsed."""
    text = str(text).replace("_", " ").strip().lower()
    text = _MARKER.sub("", text).strip()
    return _SPACES.sub(" ", text)


def dedupe(concepts: Iterable[str]) -> list[str]:
    """Normalise and de-duplicate, first occurrence wins; empty strings dropped."""
    seen: set[str] = set()
    out: list[str] = []
    for raw in concepts:
        c = normalize_concept(raw)
        if c and c not in seen:
            seen.add(c)
            out.append(c)
    return out


@dataclass(frozen=True)
class Corpus:
    """An ordered concept vocabulary. ``spec`` says where it came from (a builtin name or a path)."""

    spec: str
    concepts: tuple[str, ...]

    @property
    def digest(self) -> str:
        """sha1 (first 16 hex) of the concept list; part of the embedding cache key."""
        h = hashlib.sha1("\n".join(self.concepts).encode("utf-8"))
        return h.hexdigest()[:16]

    def __len__(self) -> int:
        return len(self.concepts)

    def index(self) -> dict[str, int]:
        """Map concept string -> row index."""
        return {c: i for i, c in enumerate(self.concepts)}


# ----------------------------------------------------------------------------------- WordNet files
class _WordNetSource:
    """Reads WordNet database files from a plain folder or from nltk's wordnet.zip."""

    def __init__(self, location: Path) -> None:
        self.location = location

    def exists(self, name: str) -> bool:
        if self.location.suffix == ".zip":
            with zipfile.ZipFile(self.location) as zf:
                return any(n.endswith("/" + name) or n == name for n in zf.namelist())
        return (self.location / name).is_file()

    def lines(self, name: str) -> Iterator[str]:
        if self.location.suffix == ".zip":
            with zipfile.ZipFile(self.location) as zf:
                member = next(n for n in zf.namelist() if n.endswith("/" + name) or n == name)
                text = zf.read(member).decode("utf-8", errors="replace")
            yield from text.splitlines()
        else:
            with open(self.location / name, encoding="utf-8", errors="replace") as fh:
                for line in fh:
                    yield line.rstrip("\n")

    def __str__(self) -> str:
        return str(self.location)


def wordnet_candidates() -> list[Path]:
    """Where WordNet is looked for, in order: $CLUSTERMINE_WORDNET, nltk's data paths, Debian's."""
    out: list[Path] = []
    env = os.environ.get("CLUSTERMINE_WORDNET")
    if env:
        out.append(Path(env))
    try:  # nltk is a dependency, but WordNet must not need it to be importable
        import nltk

        data_paths = list(nltk.data.path)
    except Exception:  # pragma: no cover - nltk missing or broken
        data_paths = []
    for base in data_paths:
        out.append(Path(base) / "corpora" / "wordnet")
        out.append(Path(base) / "corpora" / "wordnet.zip")
    out.append(Path("/usr/share/wordnet"))
    return out


def find_wordnet() -> _WordNetSource:
    """Return the first WordNet location holding ``index.noun``; CorpusError with install hints."""
    for loc in wordnet_candidates():
        try:
            if loc.is_dir() or (loc.is_file() and loc.suffix == ".zip"):
                src = _WordNetSource(loc)
                if src.exists("index.noun"):
                    return src
        except (OSError, zipfile.BadZipFile):
            continue
    raise CorpusError(_INSTALL_HINT)


def _index_lemmas(src: _WordNetSource, pos: str) -> list[str]:
    # index.<pos>: header lines start with two spaces; the lemma is the first field.
    return [line.split(" ", 1)[0] for line in src.lines(f"index.{pos}") if line and not line.startswith("  ")]


def _first_lemmas(src: _WordNetSource, pos: str) -> list[str]:
    # data.<pos>: "offset lex_filenum ss_type w_cnt word lex_id ..." -> the synset's first word.
    out = []
    for line in src.lines(f"data.{pos}"):
        if not line or line.startswith("  "):
            continue
        fields = line.split(" ", 5)
        if len(fields) > 4:
            out.append(fields[4])
    return out


def load_wordnet(kind: str = "wordnet-nouns") -> Corpus:
    """Load a builtin WordNet corpus (see ``BUILTIN_CORPORA``)."""
    src = find_wordnet()
    try:
        if kind == "wordnet-nouns":
            words = _index_lemmas(src, "noun")
        elif kind == "wordnet-nouns-adjectives":
            words = _index_lemmas(src, "noun") + _index_lemmas(src, "adj")
        elif kind == "wordnet-nouns-first-lemma":
            words = _first_lemmas(src, "noun")
        else:
            raise CorpusError(f"unknown corpus {kind!r}; choose one of {', '.join(BUILTIN_CORPORA)} or a text file path")
    except (OSError, StopIteration) as exc:
        raise CorpusError(f"WordNet files in {src} are incomplete ({exc}). {_INSTALL_HINT}") from exc
    concepts = dedupe(words)
    if not concepts:
        raise CorpusError(f"WordNet files in {src} hold no {kind} entries. {_INSTALL_HINT}")
    return Corpus(spec=kind, concepts=tuple(concepts))


def load_concept_file(path: str | os.PathLike) -> Corpus:
    """One concept per line (UTF-8); blank lines and lines starting with '#' are ignored."""
    p = Path(path)
    if not p.is_file():
        raise CorpusError(f"{p}: concept file not found (expected a text file with one concept per line)")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise CorpusError(f"{p}: not a UTF-8 text file (byte {exc.start}); save it as UTF-8, one concept per line") from exc
    except OSError as exc:
        raise CorpusError(f"{p}: cannot be read ({exc.strerror})") from exc
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    concepts = dedupe(lines)
    if not concepts:
        raise CorpusError(f"{p}: holds no concepts (one per line, '#' starts a comment)")
    return Corpus(spec=str(p.resolve()), concepts=tuple(concepts))


def load_corpus(spec: str = "wordnet-nouns") -> Corpus:
    """A builtin name (``wordnet-nouns`` ...) or a path to a text file with one concept per line."""
    if spec in BUILTIN_CORPORA:
        return load_wordnet(spec)
    if os.sep in spec or spec.endswith(".txt") or Path(spec).exists():
        return load_concept_file(spec)
    raise CorpusError(f"unknown corpus {spec!r}; choose one of {', '.join(BUILTIN_CORPORA)} or a text file path")


# ------------------------------------------------------------------------------ text embeddings
def prompts(concepts: Iterable[str], template: str) -> list[str]:
    """Fill the prompt template (``{}`` marks the concept) for each concept."""
    if "{}" not in template:
        raise CorpusError(f"prompt template {template!r} must contain '{{}}' where the concept goes")
    return [template.replace("{}", c) for c in concepts]


def embedding_cache_key(encoder_fingerprint: str, corpus: Corpus, template: str) -> str:
    """Cache key of a corpus embedding: encoder fingerprint + corpus digest + template."""
    h = hashlib.sha1(f"{encoder_fingerprint}|{corpus.digest}|{template}".encode("utf-8"))
    return h.hexdigest()[:20]


def embed_concepts(encoder, concepts: list[str], template: str, *, progress: ProgressFn | None = None,
                   batch_size: int = 256) -> np.ndarray:
    """Embed concepts with the encoder's text tower. Returns float32 [M, D], rounded through float16
    so that freshly computed and cached embeddings are bit-identical."""
    texts = prompts(concepts, template)
    # Length-sorted batches: a transformer pads every batch to its longest text, so grouping texts
    # of similar length removes most of the padding work; rows are put back in corpus order.
    order = np.argsort(np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts)), kind="stable")
    emb_sorted = encoder.encode_texts([texts[i] for i in order], batch_size=batch_size, progress=progress)
    emb = np.empty_like(np.asarray(emb_sorted))
    emb[order] = emb_sorted
    return np.asarray(emb, dtype=np.float16).astype(np.float32)


def corpus_embeddings(encoder, corpus: Corpus, template: str | None = None, *,
                      cache_dir: str | os.PathLike | None = None,
                      progress: ProgressFn | None = None) -> tuple[np.ndarray, Path]:
    """Text embeddings of a whole corpus, float32 [M, D], from the disk cache when possible.

    Returns the matrix and the cache file (float16 ``.npy``) it lives in.
    """
    template = template or encoder.text_template
    root = Path(cache_dir) if cache_dir else cache_root() / "text"
    key = embedding_cache_key(encoder.fingerprint_id, corpus, template)
    path = root / f"{key}.npy"
    root.mkdir(parents=True, exist_ok=True)
    # One process computes a given corpus embedding; others wait and then read the cache.
    with FileLock(str(root / f".{key}.lock")):
        return _cached_or_embed(encoder, corpus, template, path, progress)


def _cached_or_embed(encoder, corpus: Corpus, template: str, path: Path,
                     progress: ProgressFn | None) -> tuple[np.ndarray, Path]:
    if path.is_file():
        try:
            emb = np.load(path, mmap_mode=None)
            if emb.shape[0] == len(corpus):
                if progress:
                    progress(len(corpus), len(corpus))
                return emb.astype(np.float32), path
        except (OSError, ValueError):
            pass  # a damaged cache entry is recomputed below
    emb = embed_concepts(encoder, list(corpus.concepts), template, progress=progress)
    atomic_save_npy(path, emb.astype(np.float16))
    atomic_write_json(path.with_suffix(".json"), {
        "corpus": corpus.spec, "corpus_digest": corpus.digest, "n": len(corpus),
        "template": template, "encoder": encoder.fingerprint, "encoder_id": encoder.fingerprint_id,
    })
    return emb, path
