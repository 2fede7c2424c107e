"""Bring your own embeddings: read and check precomputed image features for ``mine --features``.

Two layouts are accepted (see :func:`load_feature_source`):

* one ``.npy`` file, float16/float32 ``[N, D]``, plus a PATHS file naming the image of each row;
* the folder clip-retrieval's ``clip-retrieval inference`` writes: ``img_emb/img_emb_<k>.npy`` (float16,
  L2-normalised) paired with ``metadata/metadata_<k>.parquet`` (column ``image_path``) by the index ``k``.

Features are opened memory-mapped and only ever read in row chunks, so memory is independent of N
apart from the paths themselves (one Arrow string array) and one float32 norm per row during checks.
Mining uses directions only (cosine), so rows are L2-normalised on the way in
(:func:`iter_normalized_chunks`); the norm checks exist to catch files that are not encoder output.
"""

from __future__ import annotations

import csv
import mmap
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from clustermine.core.errors import FeatureInputError

ACCEPTED_DTYPES = (np.dtype(np.float16), np.dtype(np.float32))
PATH_COLUMNS = ("image_path", "path")  # looked up in this order in a .parquet / .csv paths file
# Norm sanity (first principles, not fitted to any data): an encoder's projection head puts every image
# of one model on a similar scale: unit norm if normalised, else within one or two decades of ~1-100.
# Outside [1e-2, 1e4] for the median, values are not embeddings as an encoder writes them (e.g. scaled
# twice, integer codes cast to float), and float16 loses precision towards its subnormal range at the low
# end. A row whose norm is MAX_NORM_RATIO away from the median is not from the same encoder and
# preprocessing as the rest (placeholder rows, uninitialised memory, another model's output).
MEDIAN_NORM_BAND = (1e-2, 1e4)
MAX_NORM_RATIO = 100.0
NORMALISED_TOL = 1e-2  # |norm - 1| below this for every row: the file is already L2-normalised (float16 ok)
_SHOW = 5  # row indices quoted in an error message

ProgressFn = Callable[[int, int], None]


@dataclass
class FeaturePart:
    """One feature file: ``array`` is its memory-mapped ``[n, D]`` rows; ``paths_file`` names its rows."""

    file: Path
    array: np.ndarray
    paths_file: Path | None = None
    n_paths: int | None = None  # rows in paths_file when it is per-part (clip-retrieval metadata)


@dataclass
class FeatureSource:
    """Precomputed features and the image path / id of every row, in row order.

    ``parts`` are memory-mapped arrays read in order (one for a single ``.npy``, one per shard for
    clip-retrieval); ``paths`` is a pyarrow string array with one entry per row of all parts together.
    """

    parts: list[FeaturePart]
    paths: Any  # pyarrow.Array of strings
    layout: str  # "npy" | "clip-retrieval"
    source: str  # what was read, for messages
    paths_source: str = ""

    @property
    def features(self) -> np.ndarray | None:
        """The single memory-mapped ``[N, D]`` array, or None for a multi-file source (use :meth:`iter_chunks`)."""
        return self.parts[0].array if len(self.parts) == 1 else None

    @property
    def n(self) -> int:
        return int(sum(p.array.shape[0] for p in self.parts if p.array.ndim >= 1))

    @property
    def d(self) -> int:
        a = self.parts[0].array
        return int(a.shape[1]) if a.ndim == 2 else 0

    @property
    def dtype(self) -> np.dtype:
        return self.parts[0].array.dtype

    def iter_chunks(self, chunk_rows: int = 65536) -> Iterator[tuple[int, np.ndarray, FeaturePart]]:
        """Yield ``(start_row, rows, part)``: raw views of at most ``chunk_rows`` rows, never spanning two files.

        Once the caller asks for the next chunk, the previous chunk's pages leave this process's RSS
        (they stay in the OS page cache; a view kept by the caller still reads correctly, from the file).
        """
        start = 0
        for part in self.parts:
            n = part.array.shape[0]
            for lo in range(0, n, chunk_rows):
                yield start + lo, part.array[lo:lo + chunk_rows], part
                _drop_pages(part.array, lo, min(lo + chunk_rows, n))
            start += n


def _drop_pages(arr: np.ndarray, lo: int, hi: int) -> None:
    """Let rows ``[lo, hi)`` of a read-only memory map leave RSS, so a full pass keeps RSS flat in N."""
    mm = getattr(arr, "_mmap", None)  # numpy.memmap's mmap.mmap; it starts at offset rounded down
    if mm is None or not hasattr(mmap, "MADV_DONTNEED") or not arr.flags.c_contiguous or arr.ndim != 2:
        return
    data = arr.offset % mmap.ALLOCATIONGRANULARITY  # where row 0 lies inside the mapping
    begin, end = data + lo * arr.strides[0], data + hi * arr.strides[0]
    begin -= begin % mmap.PAGESIZE
    try:
        mm.madvise(mmap.MADV_DONTNEED, begin, end - begin)
    except (OSError, ValueError):  # not critical: pages then simply stay resident
        pass


@dataclass
class FeatureStats:
    """What :func:`validate_features` found. Norms are Euclidean norms of the stored rows."""

    n: int
    d: int
    dtype: str
    norm_min: float
    norm_median: float
    norm_max: float
    normalised: bool  # every row already has unit norm (within NORMALISED_TOL)
    duplicate_paths: int = 0  # rows whose path repeats an earlier row's
    warnings: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- loading
def _open_npy(file: Path) -> np.ndarray:
    try:
        return np.load(file, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise FeatureInputError(f"{file}: not a readable .npy array ({exc}); save features with "
                                f"numpy.save(path, array) as float16 or float32 [N, D]") from None


def _string_column(table: Any, file: Path) -> Any:
    import pyarrow as pa

    names = table.column_names
    col = next((c for c in PATH_COLUMNS if c in names), names[0] if len(names) == 1 else None)
    if col is None:
        raise FeatureInputError(f"{file}: no column named {' or '.join(PATH_COLUMNS)} among {names}; "
                                f"name the column of image paths 'image_path'")
    return table.column(col).cast(pa.string()).combine_chunks()


def read_paths(file: str | Path) -> Any:
    """Row identities from ``file`` as a pyarrow string array, in file order.

    ``.parquet`` / ``.csv``: column ``image_path``, else ``path``, else the only column (csv read as
    text, so ``0001`` stays ``0001``). Anything else: UTF-8 text, one path per line; trailing blank
    lines are ignored, a blank line inside the list is kept (and refused by validation), paths verbatim.
    """
    import pyarrow as pa

    file = Path(file)
    if not file.is_file():
        raise FeatureInputError(f"{file}: paths file not found; pass --paths FILE with one image path per row")
    suffix = file.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            names = pq.read_schema(file).names
            cols = [c for c in PATH_COLUMNS if c in names][:1] or None
            return _string_column(pq.read_table(file, columns=cols), file)
        except (pa.ArrowException, OSError) as exc:
            raise FeatureInputError(f"{file}: unreadable parquet ({exc})") from None
    if suffix == ".csv":
        import pyarrow.csv as pcsv

        try:
            with open(file, encoding="utf-8-sig", newline="") as fh:
                header = next(csv.reader(fh), [])
            table = pcsv.read_csv(file, convert_options=pcsv.ConvertOptions(
                column_types={h: pa.string() for h in header}, strings_can_be_null=False))
            return _string_column(table, file)
        except (pa.ArrowException, OSError, UnicodeDecodeError) as exc:
            raise FeatureInputError(f"{file}: unreadable csv ({exc})") from None
    if suffix in (".npy", ".npz", ".json", ".jsonl"):
        raise FeatureInputError(f"{file}: {suffix} is not a paths format; give a text file with one path per "
                                f"line, or a .parquet / .csv with an 'image_path' column")
    chunks, batch = [], []
    try:
        with open(file, encoding="utf-8-sig") as fh:  # universal newlines: \n, \r\n and \r all end a line
            for line in fh:
                batch.append(line.rstrip("\n"))
                if len(batch) == 65536:
                    chunks.append(pa.array(batch, type=pa.string()))
                    batch = []
    except UnicodeDecodeError as exc:
        raise FeatureInputError(f"{file}: not UTF-8 text ({exc}); save the paths list as UTF-8") from None
    chunks.append(pa.array(batch, type=pa.string()))
    arr = pa.chunked_array(chunks, type=pa.string()).combine_chunks()
    n = len(arr)
    while n and arr[n - 1].as_py() == "":  # trailing blank lines
        n -= 1
    return arr.slice(0, n)


def _shard_key(file: Path, prefix: str) -> str | None:
    k = file.stem[len(prefix):]
    return k if file.stem.startswith(prefix) and k.isdigit() else None


def _clip_retrieval_parts(root: Path, with_metadata: bool) -> tuple[list[FeaturePart], list[Path]]:
    emb_dir, meta_dir = root / "img_emb", root / "metadata"
    shards = sorted(((k, f) for f in emb_dir.glob("img_emb_*.npy") if (k := _shard_key(f, "img_emb_")) is not None),
                    key=lambda kf: int(kf[0]))
    if not shards:
        raise FeatureInputError(f"{emb_dir}: no img_emb_<k>.npy files (the clip-retrieval image embeddings)")
    parts, metas = [], []
    for k, f in shards:
        meta = meta_dir / f"metadata_{k}.parquet"
        if with_metadata and not meta.is_file():
            raise FeatureInputError(f"{f}: its metadata {meta} is missing, so its rows have no image path; "
                                    f"restore it, or pass --paths FILE listing every row's path in shard order")
        parts.append(FeaturePart(f, _open_npy(f), meta if with_metadata else None))
        metas.append(meta)
    return parts, metas


def load_feature_source(features: str | Path, paths: str | Path | None = None, *,
                        need_paths: bool = True) -> FeatureSource:
    """Open precomputed features (memory-mapped) and the path of each row; checks come in :func:`validate_features`.

    ``features``: a ``.npy`` file ``[N, D]``, or a clip-retrieval output folder (or its ``img_emb``
    subfolder). ``paths``: a paths file (see :func:`read_paths`); optional for clip-retrieval, whose
    ``metadata/metadata_<k>.parquet`` name the rows of ``img_emb_<k>.npy`` (``paths`` overrides them).

    Without any paths the source is refused rather than given synthetic ids: every later stage (audit
    galleries, export, scoring a file) names images by path, and a run whose rows identify nothing
    cannot be checked or used. Any stable id per row (a file name, a database key) is accepted.
    ``need_paths`` False (evaluation: only the scores of all rows matter): without ``paths`` the rows
    get the ids ``<file>#<row>`` and clip-retrieval metadata is not read.
    """
    file = Path(features)
    if file.is_dir():
        root = file.parent if file.name == "img_emb" and not (file / "img_emb").is_dir() else file
        if not (root / "img_emb").is_dir():
            raise FeatureInputError(f"{file}: a folder must be clip-retrieval output (img_emb/img_emb_0.npy, "
                                    f"metadata/metadata_0.parquet); otherwise pass one .npy file [N, D]")
        parts, metas = _clip_retrieval_parts(root, with_metadata=paths is None and need_paths)
        if paths is None and need_paths:
            import pyarrow as pa

            cols = [read_paths(m) for m in metas]
            for part, col in zip(parts, cols):
                part.n_paths = len(col)
            arr = pa.chunked_array(cols, type=pa.string()).combine_chunks()
            return FeatureSource(parts, arr, "clip-retrieval", str(root), paths_source=str(root / "metadata"))
        layout, source = "clip-retrieval", str(root)
    elif file.is_file():
        if file.suffix.lower() != ".npy":
            raise FeatureInputError(f"{file}: features must be a .npy file (float16/float32 [N, D]) or a "
                                    f"clip-retrieval folder; convert with numpy.save('features.npy', array)")
        parts, layout, source = [FeaturePart(file, _open_npy(file))], "npy", str(file)
    else:
        raise FeatureInputError(f"{file}: features file or folder not found")
    if paths is None and not need_paths:
        import pyarrow as pa

        ids = [f"{p.file.name}#{i}" for p in parts for i in range(p.array.shape[0] if p.array.ndim else 0)]
        return FeatureSource(parts, pa.array(ids, type=pa.string()), layout, source, paths_source="(row numbers)")
    if paths is None:
        raise FeatureInputError(f"{file}: rows need an identity: pass --paths FILE (one image path or id per "
                                f"line, in row order, or a .parquet/.csv with an 'image_path' column)")
    for part in parts:
        part.paths_file = Path(paths)
    return FeatureSource(parts, read_paths(paths), layout, source, paths_source=str(paths))


def describe_feature_source(source: FeatureSource) -> str:
    """One line for progress messages: N, D, dtype and layout."""
    shape = f"{source.n:,} x {source.d}" if source.d else f"shape {source.parts[0].array.shape}"
    files = f", {len(source.parts)} shards" if len(source.parts) > 1 else ""
    return f"{shape} {source.dtype} features ({source.layout}{files}) from {source.source}"


# ----------------------------------------------------------------------------- checks
def _rows(idx: np.ndarray, total: int) -> str:
    shown = ", ".join(str(int(i)) for i in idx[:_SHOW])
    return f"{total} row(s) (first: {shown}{', ...' if total > _SHOW else ''})"


def _norms(rows: np.ndarray) -> np.ndarray:
    x = np.asarray(rows, dtype=np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        return np.sqrt(np.einsum("ij,ij->i", x, x))


def validate_features(source: FeatureSource, text_dim: int, *, chunk_rows: int = 65536,
                      encoder_name: str | None = None, progress: ProgressFn | None = None) -> FeatureStats:
    """Check shapes, dtype, the text-tower dimension, finiteness, norms and the paths; raise FeatureInputError.

    Reads the features once in chunks of ``chunk_rows`` rows (memory: one chunk plus a float32 norm per
    row). Norm rule: every row's norm must be > 0; the median norm must lie in MEDIAN_NORM_BAND; no row
    may differ from the median by more than a factor MAX_NORM_RATIO. Duplicate paths are a warning
    (``stats.warnings``): the same image embedded twice mines fine but shows twice in galleries.
    """
    import pyarrow.compute as pc

    enc = f"encoder {encoder_name!r}" if encoder_name else "the encoder"
    d0 = None
    for part in source.parts:
        a, f = part.array, part.file
        if a.ndim != 2:
            raise FeatureInputError(f"{f}: features must be 2-D [N, D] (one row per image), got shape {a.shape}")
        if a.dtype not in ACCEPTED_DTYPES:
            raise FeatureInputError(f"{f}: features are {a.dtype}; only float16 or float32 are accepted "
                                    f"(convert with numpy.save(path, array.astype('float32')))")
        if d0 is None:
            d0 = a.shape[1]
        elif a.shape[1] != d0 or a.dtype != source.parts[0].array.dtype:
            raise FeatureInputError(f"{f}: shard is {a.dtype} D={a.shape[1]} but {source.parts[0].file} is "
                                    f"{source.parts[0].array.dtype} D={d0}; all shards must come from one encoder")
        if part.n_paths is not None and part.n_paths != a.shape[0]:
            raise FeatureInputError(f"{f} has {a.shape[0]} rows but {part.paths_file} lists {part.n_paths} "
                                    f"paths; they must pair row for row")
    n, d = source.n, source.d
    if d != text_dim:
        raise FeatureInputError(f"{source.source}: features have D={d} but {enc} has a {text_dim}-d text tower: "
                                f"pass the --encoder whose text tower matches the image tower that made these features")
    if n == 0:
        raise FeatureInputError(f"{source.source}: features have no rows (N=0)")
    if len(source.paths) != n:
        raise FeatureInputError(f"{source.source} has {n} rows but {source.paths_source} lists "
                                f"{len(source.paths)} paths; they must pair row for row")
    blank = np.flatnonzero(pc.or_kleene(pc.is_null(source.paths), pc.equal(source.paths, "")).fill_null(True)
                           .to_numpy(zero_copy_only=False))
    if blank.size:
        raise FeatureInputError(f"{source.paths_source}: {_rows(blank, blank.size)} have an empty path; "
                                f"every feature row needs the path or id of its image")

    norms = np.empty(n, dtype=np.float32)
    bad: list[np.ndarray] = []
    for start, rows, _ in source.iter_chunks(chunk_rows):
        finite = np.isfinite(rows).all(axis=1)
        if not finite.all():
            bad.append(start + np.flatnonzero(~finite))
        norms[start:start + len(rows)] = _norms(rows)
        if progress:
            progress(start + len(rows), n)
    if bad:
        idx = np.concatenate(bad)
        raise FeatureInputError(f"{source.source}: {_rows(idx, idx.size)} contain NaN or infinite values; "
                                f"re-encode those images or drop the rows and their paths")
    zero = np.flatnonzero(norms == 0)
    if zero.size:
        raise FeatureInputError(f"{source.source}: {_rows(zero, zero.size)} are all zeros (no direction; often "
                                f"placeholders for images that failed to encode); drop them and their paths")
    median = float(np.median(norms))
    lo, hi = MEDIAN_NORM_BAND
    if not lo <= median <= hi:
        raise FeatureInputError(f"{source.source}: median row norm is {median:.3g}, outside [{lo:g}, {hi:g}] where "
                                f"image embeddings lie; these values are not encoder output as written (scaled?)")
    ratio = norms / np.float32(median)
    odd = np.flatnonzero(~((ratio >= 1 / MAX_NORM_RATIO) & (ratio <= MAX_NORM_RATIO)))
    if odd.size:
        raise FeatureInputError(f"{source.source}: {_rows(odd, odd.size)} have norms more than {MAX_NORM_RATIO:g}x "
                                f"away from the median {median:.3g} (e.g. row {int(odd[0])}: {norms[odd[0]]:.3g}); "
                                f"rows from one encoder share a scale: drop or re-encode them")
    # sorted neighbours rather than a hash set: ~4x less peak memory and faster on 1M+ paths
    ordered = pc.take(source.paths, pc.sort_indices(source.paths))
    same = pc.equal(ordered.slice(1), ordered.slice(0, n - 1)).to_numpy(zero_copy_only=False)
    dup = int(same.sum())
    warns = [f"{source.paths_source}: {dup} path(s) repeat another row's (e.g. {ordered[int(np.argmax(same))]}); "
             f"each copy is mined as its own image"] if dup else []
    return FeatureStats(n=n, d=d, dtype=str(source.dtype), norm_min=float(norms.min()), norm_median=median,
                        norm_max=float(norms.max()),
                        normalised=bool(np.all(np.abs(norms - 1) <= NORMALISED_TOL)),
                        duplicate_paths=dup, warnings=warns)


def iter_normalized_chunks(source: FeatureSource, chunk_rows: int = 65536) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(start_row, float32 [n, D])`` L2-normalised rows, ``n <= chunk_rows``, in row order.

    Expects a source that passed :func:`validate_features`; a non-finite or zero row still raises.
    """
    for start, rows, part in source.iter_chunks(chunk_rows):
        x = np.array(rows, dtype=np.float32)
        norms = _norms(x)
        if not (np.isfinite(norms).all() and (norms > 0).all()):
            raise FeatureInputError(f"{part.file}: rows {start}..{start + len(x) - 1} hold a non-finite or "
                                    f"zero row; run validate_features first")
        x /= norms[:, None]
        yield start, x
