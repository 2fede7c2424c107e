"""Tests of clustermine.method.feature_input on small real files written in tmp_path (synthetic arrays)."""

from __future__ import annotations

import mmap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clustermine.method.encoders.offline import TEXT_DIM
from clustermine.core.errors import ClusterMineError, FeatureInputError
from clustermine.method.feature_input import (
    describe_feature_source,
    iter_normalized_chunks,
    load_feature_source,
    read_paths,
    validate_features,
)

D = TEXT_DIM  # the offline encoder's 384-d text tower


def _feats(n: int, d: int = D, dtype: type = np.float32, scale: float = 1.0, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return (x * scale).astype(dtype)


def _npy(tmp_path: Path, x: np.ndarray, n_paths: int | None = None, name: str = "f.npy") -> tuple[Path, Path]:
    f = tmp_path / name
    np.save(f, x)
    p = tmp_path / "paths.txt"
    n = len(x) if n_paths is None else n_paths
    p.write_text("".join(f"img/{i:05d}.jpg\n" for i in range(n)) + "\n", encoding="utf-8")
    return f, p


def _clip_retrieval(tmp_path: Path, sizes: tuple[int, ...] = (5, 3), meta_rows: tuple[int, ...] | None = None) -> Path:
    root = tmp_path / "emb"
    (root / "img_emb").mkdir(parents=True)
    (root / "metadata").mkdir()
    x = _feats(sum(sizes), dtype=np.float16, seed=1)
    start = 0
    for k, (n, m) in enumerate(zip(sizes, meta_rows or sizes)):
        np.save(root / "img_emb" / f"img_emb_{k}.npy", x[start:start + n])
        pq.write_table(pa.table({"image_path": [f"s{k}/{i}.jpg" for i in range(m)], "caption": ["c"] * m}),
                       root / "metadata" / f"metadata_{k}.parquet")
        start += n
    np.save(root / "all.npy", x)  # reference for the tests, not part of the layout
    return root


def _error(source, text_dim: int = D, **kw) -> str:
    with pytest.raises(FeatureInputError) as info:
        validate_features(source, text_dim, **kw)
    assert isinstance(info.value, ClusterMineError)
    return str(info.value)


# ----------------------------------------------------------------------------- layouts
def test_single_npy_float16_stays_memory_mapped(tmp_path):
    x = _feats(7, dtype=np.float16)
    f, p = _npy(tmp_path, x)
    src = load_feature_source(f, p)
    assert src.layout == "npy" and src.n == 7 and src.d == D
    assert isinstance(src.features, np.memmap) and isinstance(src.features._mmap, mmap.mmap)
    assert src.features.dtype == np.float16
    assert src.paths.to_pylist() == [f"img/{i:05d}.jpg" for i in range(7)]  # trailing blank line ignored
    stats = validate_features(src, D)
    assert (stats.n, stats.d, stats.dtype, stats.normalised) == (7, D, "float16", True)
    assert "7 x 384 float16" in describe_feature_source(src) and "npy" in describe_feature_source(src)


@pytest.mark.parametrize("kind", ["parquet", "csv", "csv_path", "csv_single"])
def test_paths_from_tables(tmp_path, kind):
    names = ["0001", "b, c.jpg", "ü/d.jpg"]  # "0001" must stay text, a comma inside must survive
    if kind == "parquet":
        p = tmp_path / "m.parquet"
        pq.write_table(pa.table({"other": [1, 2, 3], "image_path": names}), p)
    else:
        p = tmp_path / "m.csv"
        col = {"csv": "image_path", "csv_path": "path", "csv_single": "whatever"}[kind]
        extra = "" if kind == "csv_single" else ",label"
        body = "".join(f'"{n}"' + ("" if kind == "csv_single" else ",x") + "\n" for n in names)
        p.write_text(f"{col}{extra}\n{body}", encoding="utf-8")
    assert read_paths(p).to_pylist() == names


def test_paths_text_crlf_and_bom(tmp_path):
    p = tmp_path / "p.lst"
    p.write_bytes("\ufeffa.jpg\r\nb c.jpg\r\n\r\n".encode())
    assert read_paths(p).to_pylist() == ["a.jpg", "b c.jpg"]


def test_paths_table_without_path_column_is_refused(tmp_path):
    p = tmp_path / "m.parquet"
    pq.write_table(pa.table({"a": ["x"], "b": ["y"]}), p)
    with pytest.raises(FeatureInputError, match="m.parquet.*image_path"):
        read_paths(p)


@pytest.mark.parametrize("sub", ["", "img_emb"])
def test_clip_retrieval_folder(tmp_path, sub):
    root = _clip_retrieval(tmp_path, sizes=(5, 3))
    src = load_feature_source(root / sub if sub else root)
    assert src.layout == "clip-retrieval" and len(src.parts) == 2 and src.features is None
    assert all(isinstance(p.array, np.memmap) for p in src.parts)
    assert src.n == 8 and src.paths.to_pylist() == [f"s0/{i}.jpg" for i in range(5)] + [f"s1/{i}.jpg" for i in range(3)]
    assert "2 shards" in describe_feature_source(src)
    stats = validate_features(src, D, chunk_rows=2)
    assert stats.n == 8 and stats.normalised
    # chunks never span shards, cover every row once, in order, and are unit-norm float32
    ref = np.load(root / "all.npy").astype(np.float32)
    got = list(iter_normalized_chunks(src, chunk_rows=2))
    assert [s for s, _ in got] == [0, 2, 4, 5, 7]
    x = np.concatenate([c for _, c in got])
    assert x.dtype == np.float32 and x.shape == (8, D)
    np.testing.assert_allclose(x, ref / np.linalg.norm(ref, axis=1, keepdims=True), atol=1e-6)


def test_clip_retrieval_shards_sorted_numerically(tmp_path):
    root = _clip_retrieval(tmp_path, sizes=(1,) * 11)
    src = load_feature_source(root)
    assert [p.file.name for p in src.parts][9:] == ["img_emb_9.npy", "img_emb_10.npy"]
    assert src.paths.to_pylist()[10] == "s10/0.jpg"


def test_clip_retrieval_missing_metadata_and_per_shard_mismatch(tmp_path):
    root = _clip_retrieval(tmp_path, sizes=(4, 4), meta_rows=(5, 3))  # totals agree, shards do not
    msg = _error(load_feature_source(root))
    assert "img_emb_0.npy has 4 rows" in msg and "metadata_0.parquet lists 5" in msg
    (root / "metadata" / "metadata_1.parquet").unlink()
    with pytest.raises(FeatureInputError, match="metadata_1.parquet is missing"):
        load_feature_source(root)
    # an explicit paths file replaces the metadata
    p = tmp_path / "p.txt"
    p.write_text("\n".join(str(i) for i in range(8)))
    assert validate_features(load_feature_source(root, p), D).n == 8


def test_no_paths_is_refused(tmp_path):
    f, _ = _npy(tmp_path, _feats(3))
    with pytest.raises(FeatureInputError, match="rows need an identity.*--paths"):
        load_feature_source(f)
    with pytest.raises(FeatureInputError, match="not found"):
        load_feature_source(tmp_path / "nope.npy", tmp_path / "paths.txt")
    with pytest.raises(FeatureInputError, match="clip-retrieval"):
        load_feature_source(tmp_path, tmp_path / "paths.txt")  # a folder that is not clip-retrieval output


# ----------------------------------------------------------------------------- validation errors
def test_raw_norm_features_pass(tmp_path):
    x = _feats(50, scale=10.0) * np.linspace(0.7, 1.3, 50, dtype=np.float32)[:, None]  # raw CLIP-like spread
    src = load_feature_source(*_npy(tmp_path, x))
    stats = validate_features(src, D, chunk_rows=7)
    assert not stats.normalised and 6.9 < stats.norm_min < 7.1 and 12.9 < stats.norm_max < 13.1
    x_norm = np.concatenate([c for _, c in iter_normalized_chunks(src, 16)])
    np.testing.assert_allclose(np.linalg.norm(x_norm, axis=1), 1.0, atol=1e-6)


def test_dim_mismatch_names_file_and_encoder(tmp_path):
    f, p = _npy(tmp_path, _feats(4, d=512))
    msg = _error(load_feature_source(f, p), D, encoder_name="offline")
    assert str(f) in msg and "D=512" in msg and "'offline' has a 384-d text tower" in msg


def test_wrong_dtype_and_1d(tmp_path):
    f, p = _npy(tmp_path, _feats(4).astype(np.float64))
    msg = _error(load_feature_source(f, p))
    assert str(f) in msg and "float64" in msg
    f, p = _npy(tmp_path, _feats(4).ravel(), name="flat.npy")
    msg = _error(load_feature_source(f, p))
    assert str(f) in msg and "2-D" in msg


def test_count_mismatch_names_both_files(tmp_path):
    f, p = _npy(tmp_path, _feats(6), n_paths=5)
    msg = _error(load_feature_source(f, p))
    assert str(f) in msg and str(p) in msg and "6 rows" in msg and "5 paths" in msg


def test_empty_features(tmp_path):
    f, p = _npy(tmp_path, np.zeros((0, D), np.float32))
    assert "N=0" in _error(load_feature_source(f, p))


def test_nan_rows_are_counted_and_located(tmp_path):
    x = _feats(20, dtype=np.float16)
    x[[3, 11, 17], 5] = np.nan
    x[12, 0] = np.inf
    f, p = _npy(tmp_path, x)
    msg = _error(load_feature_source(f, p), chunk_rows=8)
    assert str(f) in msg and "4 row(s) (first: 3, 11, 12, 17)" in msg and "NaN" in msg


def test_zero_rows(tmp_path):
    x = _feats(10)
    x[[2, 9]] = 0
    f, p = _npy(tmp_path, x)
    msg = _error(load_feature_source(f, p))
    assert str(f) in msg and "2 row(s) (first: 2, 9)" in msg and "zeros" in msg


def test_norm_outlier_rows_and_scaled_files(tmp_path):
    x = _feats(30, scale=10.0)
    x[7] *= 1e-4  # 1000x below the median
    f, p = _npy(tmp_path, x)
    msg = _error(load_feature_source(f, p))
    assert str(f) in msg and "(first: 7)" in msg and "100x" in msg
    f, p = _npy(tmp_path, _feats(30, scale=1e6), name="scaled.npy")
    msg = _error(load_feature_source(f, p))
    assert str(f) in msg and "median row norm is 1e+06" in msg


def test_blank_path_refused_and_duplicates_warned(tmp_path):
    f, p = _npy(tmp_path, _feats(3))
    p.write_text("a.jpg\n\nc.jpg\n")
    msg = _error(load_feature_source(f, p))
    assert str(p) in msg and "(first: 1)" in msg and "empty path" in msg
    p.write_text("a.jpg\nb.jpg\na.jpg\n")
    stats = validate_features(load_feature_source(f, p), D)
    assert stats.duplicate_paths == 1 and "repeat" in stats.warnings[0] and "a.jpg" in stats.warnings[0]


def test_validate_progress_reaches_n(tmp_path):
    src = load_feature_source(*_npy(tmp_path, _feats(10)))
    seen: list[tuple[int, int]] = []
    validate_features(src, D, chunk_rows=4, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(4, 10), (8, 10), (10, 10)]


def test_views_stay_valid_after_pages_are_released(tmp_path):
    # several pages per chunk so that the release after each chunk really unmaps resident pages
    x = _feats(2000, seed=3)
    src = load_feature_source(*_npy(tmp_path, x))
    views = [(s, rows) for s, rows, _ in src.iter_chunks(chunk_rows=300)]
    assert [s for s, _ in views] == list(range(0, 2000, 300))
    np.testing.assert_array_equal(np.concatenate([r for _, r in views]), x)


def test_unusable_paths_files(tmp_path):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9.jpg\n".encode("latin-1"))
    with pytest.raises(FeatureInputError, match="latin1.txt: not UTF-8"):
        read_paths(bad)
    npy = tmp_path / "names.npy"
    np.save(npy, np.array(["a", "b"]))
    with pytest.raises(FeatureInputError, match="names.npy: .npy is not a paths format"):
        read_paths(npy)
    with pytest.raises(FeatureInputError, match="paths file not found"):
        read_paths(tmp_path / "missing.txt")
