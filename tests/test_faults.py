"""Fault injection and security (issue 5): hostile inputs built here, each one checked for a clear
message naming the file, the rest of the batch processed, and a run directory that still opens.

Everything runs on the tiny random open_clip model (tests/tiny_openclip.py) with a 50-concept
corpus and k-means, so the whole module takes seconds, not minutes.
"""

from __future__ import annotations

import ast
import contextlib
import io
import json
import os
import pickle
import shlex
import shutil
import stat
import struct
import subprocess
import sys
import time
import tomllib
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clustermine.core.errors import NoImagesError, SafetyError
from clustermine.workflows.pipeline import MineConfig, mine, score_images
from clustermine.store import Run
from clustermine.workflows.uploads import (
    UploadLimits,
    declared_entry_count,
    extract_zip,
    resolve_in_roots,
    save_upload,
    save_uploads,
)

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
sys.path.insert(0, str(TESTS))
from tiny_openclip import register_tiny_openclip  # noqa: E402

pytestmark = pytest.mark.faults

SHARED_PHOTOS = ROOT.parent / "shared" / "data" / "imagenette_train100"

CONCEPTS = [
    "tench", "goldfish", "shark", "dog", "spaniel", "cat", "horse", "bird", "parrot", "frog",
    "church", "tower", "house", "bridge", "castle", "cassette player", "radio", "television", "computer",
    "keyboard", "truck", "car", "bicycle", "airplane", "boat", "train", "chain saw", "hammer", "golf ball",
    "parachute", "french horn", "trumpet", "guitar", "piano", "tree", "flower", "grass", "mountain", "beach",
    "river", "snow", "sky", "road", "building", "person", "hand", "food", "bottle", "chair", "table",
]

# ------------------------------------------------------------------------------------ shared setup


@pytest.fixture(scope="module")
def tiny_spec(tmp_path_factory) -> str:
    name = register_tiny_openclip(tmp_path_factory.mktemp("tiny_openclip"))
    return f"openclip:{name}:none"


@pytest.fixture(scope="module")
def tiny(tiny_spec):
    from clustermine.method.encoders import load_encoder

    return load_encoder(tiny_spec, "cpu")


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("corpus") / "concepts.txt"
    p.write_text("\n".join(CONCEPTS) + "\n", encoding="utf-8")
    return p


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cm_cache")


def photo_sources(n: int) -> list[Path]:
    """``n`` distinct real photos (Imagenette) when ../shared/data exists, else synthetic JPEGs."""
    found = sorted(SHARED_PHOTOS.glob("*/*.JPEG")) if SHARED_PHOTOS.is_dir() else []
    if len(found) >= n:
        step = max(1, len(found) // n)
        return found[::step][:n]
    out_dir = Path(os.environ.get("TMPDIR", "/tmp")) / f"cm-synthetic-photos-{os.getpid()}"
    out_dir.mkdir(exist_ok=True)
    paths = []
    for i in range(n):
        p = out_dir / f"synthetic_{i}.jpg"
        if not p.exists():
            rng = np.random.default_rng(i)
            Image.fromarray(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)).save(p, quality=90)
        paths.append(p)
    return paths


def config(spec: str, corpus: Path, **kw) -> MineConfig:
    kw.setdefault("n_clusters", 3)
    kw.setdefault("batch_size", 8)
    return MineConfig(encoder=spec, clusterer="kmeans", corpus=str(corpus), device="cpu", **kw)


def mine_tiny_run(base: Path, run_dir: Path, n_images: int = 12) -> tuple[Run, object, list[Path]]:
    """A real finished run made with the tiny open_clip model on ``n_images`` photos (k-means, C = 2,
    the 50 ``CONCEPTS``), built under ``base``. Returns (run, encoder, sorted image paths)."""
    from clustermine.method.encoders import load_encoder

    spec = f"openclip:{register_tiny_openclip(base / 'cfg')}:none"
    enc = load_encoder(spec, "cpu")
    corpus = base / "concepts.txt"
    corpus.write_text("\n".join(CONCEPTS) + "\n", encoding="utf-8")
    imgs = base / "imgs"
    imgs.mkdir()
    for i, p in enumerate(photo_sources(n_images)):
        shutil.copyfile(p, imgs / f"img_{i:02d}.jpg")
    run = mine(imgs, run_dir, config(spec, corpus, n_clusters=2), encoder=enc, cache_dir=base / "cache")
    return run, enc, sorted(imgs.iterdir())


def png_with_header_only(path: Path, width: int, height: int) -> None:
    """A valid PNG signature + IHDR claiming width x height, a tiny IDAT and IEND (a pixel bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


# Files that must be skipped, with a fragment of the reason each must carry.
BAD_FILES = {
    "empty.jpg": "empty file (0 bytes)",
    "notes.jpg": "cannot identify image file",
    "truncated.jpg": "truncated",
    "bomb_50000x50000.png": "50000 x 50000",
    "outside_link.jpg": "symbolic link (not followed)",
    "outside_folder_link": "symbolic link (not followed)",
    "pipe.jpg": "not a regular file",  # a FIFO: opening it would block the scan forever
}
# Odd but legitimate images and hostile file names: all must be used.
GOOD_SPECIAL = ["gray16.png", "cmyk.jpg", "palette_alpha.png", "animated.gif", "exif_rotated.jpg",
                "one_pixel.png", "wide_10000x20.png"]
HOSTILE_NAMES = ["with space.jpg", "ünïcødé 猫 naïve.jpg", "$(touch x).jpg", "; rm -rf ~.jpg",
                 "quote'\"s.jpg", "back`touch y`tick.jpg", "new\nline.jpg", "<img src=x onerror=alert(1)>.jpg"]
N_PLAIN = 6


def build_hostile_folder(base: Path) -> tuple[Path, Path]:
    """The hostile input folder and a folder outside it that symbolic links point to."""
    folder, outside = base / "hostile input", base / "outside"
    folder.mkdir(parents=True)
    outside.mkdir()
    photos = photo_sources(N_PLAIN + len(HOSTILE_NAMES) + 3)
    it = iter(photos)

    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.jpg").write_text("these are my notes, not a picture\n", encoding="utf-8")
    data = next(it).read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 3])
    png_with_header_only(folder / "bomb_50000x50000.png", 50_000, 50_000)

    ramp = (np.linspace(0, 65535, 48 * 64).reshape(48, 64)).astype(np.uint16)
    Image.fromarray(ramp).save(folder / "gray16.png")
    Image.new("CMYK", (64, 48), (10, 200, 30, 5)).save(folder / "cmyk.jpg", quality=90)
    pal = Image.new("P", (64, 48), 0)
    pal.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (256 * 3 - 9))
    pal.paste(1, (10, 10, 40, 30))
    pal.save(folder / "palette_alpha.png", transparency=0)
    frames = [Image.new("RGB", (40, 30), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    frames[0].save(folder / "animated.gif", save_all=True, append_images=frames[1:], duration=80, loop=0)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    Image.new("RGB", (40, 20), (120, 30, 200)).save(folder / "exif_rotated.jpg", exif=exif)
    Image.new("RGB", (1, 1), (7, 8, 9)).save(folder / "one_pixel.png")
    wide = np.tile(np.linspace(0, 255, 10_000, dtype=np.uint8)[None, :, None], (20, 1, 3))
    Image.fromarray(wide).save(folder / "wide_10000x20.png")

    for name in HOSTILE_NAMES:
        shutil.copyfile(next(it), folder / name)
    for i in range(N_PLAIN):
        shutil.copyfile(next(it), folder / f"photo_{i}.jpg")
    dup = next(it)
    shutil.copyfile(dup, folder / "a_original.jpg")
    shutil.copyfile(dup, folder / "copy of a (2).jpg")

    secret = outside / "secret.jpg"
    shutil.copyfile(next(it), secret)
    os.symlink(secret, folder / "outside_link.jpg")
    os.symlink(outside, folder / "outside_folder_link")
    os.mkfifo(folder / "pipe.jpg")
    return folder, outside


def good_names() -> list[str]:
    return GOOD_SPECIAL + HOSTILE_NAMES + [f"photo_{i}.jpg" for i in range(N_PLAIN)] + ["a_original.jpg",
                                                                                      "copy of a (2).jpg"]


@pytest.fixture(scope="module")
def hostile(tmp_path_factory, tiny_spec, tiny, corpus_file, cache_dir):
    """The hostile folder mined once with pipeline.mine (cwd = a scratch folder, to catch `touch x`)."""
    base = tmp_path_factory.mktemp("hostile")
    folder, outside = build_hostile_folder(base)
    scratch = base / "cwd"
    scratch.mkdir()
    old = os.getcwd()
    os.chdir(scratch)
    try:
        run = mine(folder, base / "run", config(tiny_spec, corpus_file), encoder=tiny, cache_dir=cache_dir)
    finally:
        os.chdir(old)
    return {"base": base, "folder": folder, "outside": outside, "run": run, "cwd": scratch}


def cli(*argv: str) -> tuple[int, str, str]:
    """clustermine's CLI in this process (so the tiny test model is registered): rc, stdout, stderr."""
    from clustermine.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in argv])
    return rc, out.getvalue(), err.getvalue()


def assert_one_line_error(rc: int, err: str, *needles: str) -> None:
    assert rc == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for n in needles:
        assert n in lines[0], (n, lines[0])


# ------------------------------------------------------------------------------------ the hostile folder


def test_hostile_folder_each_bad_file_is_skipped_with_its_reason(hostile):
    run = Run.open(hostile["run"].path)  # complete and consistent
    records = {r["path"]: r for r in run.image_records()}
    for name, reason in BAD_FILES.items():
        rec = records.get(name)
        assert rec is not None, f"{name} not recorded in images.jsonl"
        assert rec["status"] == "skipped" and rec["row"] is None, rec
        assert reason in rec["reason"], (name, rec["reason"])
    # a symbolic link is recorded where it is, never resolved or read
    for name in ("outside_link.jpg", "outside_folder_link", "pipe.jpg"):
        assert records[name]["sha1"] is None
        assert str(hostile["outside"]) not in records[name]["abs_path"]
    assert len(records) == len(BAD_FILES) + len(good_names())


def test_hostile_folder_good_files_are_all_used(hostile):
    run = Run.open(hostile["run"].path)
    records = {r["path"]: r for r in run.image_records()}
    for name in good_names():
        rec = records.get(name)
        assert rec is not None, f"{name!r} missing from images.jsonl"
        assert rec["status"] == "ok" and rec["reason"] is None and isinstance(rec["row"], int), rec
    ok = run.image_records(ok_only=True)
    assert sorted(r["row"] for r in ok) == list(range(len(good_names())))
    feats = run.features()
    assert feats.shape == (len(good_names()), 32) and np.isfinite(feats).all()
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, atol=2e-2)
    s = run.meta["summary"]
    assert s["n_files"] == len(records) and s["n_skipped"] == len(BAD_FILES)
    assert s["n_images"] == len(good_names())
    assert run.status == "done" and run.positive_concepts()


def test_hostile_folder_duplicates_are_reported(hostile):
    run = Run.open(hostile["run"].path)
    records = {r["path"]: r for r in run.image_records()}
    assert records["copy of a (2).jpg"]["duplicate_of"] == "a_original.jpg"
    assert records["a_original.jpg"]["duplicate_of"] is None
    assert run.meta["summary"]["n_duplicates"] == 1
    f = run.features()
    np.testing.assert_array_equal(f[records["copy of a (2).jpg"]["row"]], f[records["a_original.jpg"]["row"]])


def test_hostile_names_reach_no_shell(hostile):
    for where in (hostile["cwd"], hostile["folder"], hostile["base"], Path.cwd()):
        assert not (where / "x").exists() and not (where / "y").exists(), where
    assert (hostile["outside"] / "secret.jpg").is_file()  # nothing "rm -rf"-ed
    # the image table (parquet) keeps names with a newline and quotes verbatim
    import pyarrow.parquet as pq

    from clustermine.store import layout

    names = pq.read_table(hostile["run"].path / layout.IMAGES).column("path").to_pylist()
    assert len(names) == len(BAD_FILES) + len(good_names())
    assert set(names) >= set(HOSTILE_NAMES)


def test_special_images_decode_upright(hostile):
    from clustermine.method.images import load_rgb

    folder = hostile["folder"]
    assert load_rgb(folder / "exif_rotated.jpg").size == (20, 40)  # EXIF orientation applied
    g16 = np.asarray(load_rgb(folder / "gray16.png"))
    assert g16.dtype == np.uint8 and g16.min() < 10 and g16.max() > 245  # scaled, not clipped to white
    assert load_rgb(folder / "palette_alpha.png").mode == "RGB"
    assert load_rgb(folder / "wide_10000x20.png").size == (10_000, 20)


def test_hostile_folder_through_the_cli(hostile, tiny_spec, corpus_file, cache_dir):
    """Same folder through `clustermine mine`: every skipped file is printed as `skipped NAME: REASON`."""
    out_dir = hostile["base"] / "cli-run"
    rc, out, err = cli("mine", hostile["folder"], "--out", out_dir, "--encoder", tiny_spec, "--clusterer", "kmeans",
                       "--clusters", "3", "--corpus", corpus_file, "--device", "cpu", "--cache-dir", cache_dir,
                       "--quiet")
    assert rc == 0, err
    assert "Traceback" not in out + err
    for name, reason in BAD_FILES.items():
        assert any(ln.startswith(f"skipped {name}: ") and reason in ln for ln in out.splitlines()), (name, out)
    assert "duplicates: 1" in out
    Run.open(out_dir)


# ------------------------------------------------------------------------------------ empty / tiny folders


def test_empty_folder_is_a_clear_error_and_a_consistent_run(tmp_path, tiny_spec, tiny, corpus_file, cache_dir):
    empty = tmp_path / "empty folder"
    empty.mkdir()
    with pytest.raises(NoImagesError, match="no image files found") as info:
        mine(empty, tmp_path / "run", config(tiny_spec, corpus_file), encoder=tiny, cache_dir=cache_dir)
    assert str(empty) in str(info.value)
    run = Run.open(tmp_path / "run", require_complete=False)
    assert run.status == "failed" and "no image files found" in run.meta["error"]
    rc, _, err = cli("mine", empty, "--out", tmp_path / "cli-run", "--encoder", tiny_spec, "--corpus", corpus_file,
                     "--device", "cpu", "--cache-dir", cache_dir, "--quiet")
    assert_one_line_error(rc, err, str(empty), "no image files found")


def test_folder_of_only_bad_files_names_them(tmp_path, tiny_spec, tiny, corpus_file, cache_dir):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.jpg").write_text("hello", encoding="utf-8")
    png_with_header_only(folder / "bomb.png", 50_000, 50_000)
    with pytest.raises(NoImagesError) as info:
        mine(folder, tmp_path / "run", config(tiny_spec, corpus_file), encoder=tiny, cache_dir=cache_dir)
    msg = str(info.value)
    assert "bomb.png" in msg and "50000 x 50000" in msg and "notes.jpg" in msg
    assert Run.open(tmp_path / "run", require_complete=False).status == "failed"


def test_one_image_and_ten_clusters_clamps_c(tmp_path, tiny_spec, tiny, corpus_file, cache_dir):
    """Behaviour: C is clamped to what N allows (here 1) and the summary says so; the run works."""
    folder = tmp_path / "one"
    folder.mkdir()
    shutil.copyfile(photo_sources(1)[0], folder / "only.jpg")
    run = mine(folder, tmp_path / "run", config(tiny_spec, corpus_file, n_clusters=10), encoder=tiny,
               cache_dir=cache_dir)
    run = Run.open(run.path)
    s = run.meta["summary"]
    assert s["clamp_warning"] == ("10 clusters requested for 1 images; using 1 so that each cluster has about 5+ "
                                  "members to vote on its concept")
    assert s["n_clusters_requested"] == 10 and s["n_clusters"] == 1 and s["n_images"] == 1
    assert len(run.positive_concepts()) == 1
    res = score_images(run, [folder / "only.jpg"], encoder=tiny)
    assert "error" not in res[0] and res[0]["is_id"] is True
    rc, out, err = cli("mine", folder, "--out", tmp_path / "cli-run", "--encoder", tiny_spec, "--clusterer", "kmeans",
                       "--clusters", "10", "--corpus", corpus_file, "--device", "cpu", "--cache-dir", cache_dir,
                       "--quiet")
    assert rc == 0 and "note: 10 clusters requested for 1 images; using 1" in out, err


def test_pixel_limit_is_configurable(tmp_path, tiny_spec, tiny, corpus_file):
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.new("RGB", (1, 1)).save(folder / "one.png")
    Image.new("RGB", (10_000, 20), (9, 9, 9)).save(folder / "wide.png")
    shutil.copyfile(photo_sources(1)[0], folder / "photo.jpg")
    cache = tmp_path / "fresh-cache"  # nothing cached: every file is decoded under the limit
    run = mine(folder, tmp_path / "run", config(tiny_spec, corpus_file, max_pixels=500 * 400), encoder=tiny,
               cache_dir=cache)
    records = {r["path"]: r for r in run.image_records()}
    assert records["wide.png"]["status"] == "ok"  # 200,000 pixels: allowed
    big = [r["path"] for r in records.values() if r["status"] == "skipped"]
    photo_pixels = int(np.prod(Image.open(folder / "photo.jpg").size))
    assert big == (["photo.jpg"] if photo_pixels > 200_000 else [])
    rc, out, err = cli("mine", folder, "--out", tmp_path / "cli-run", "--encoder", tiny_spec, "--clusterer", "kmeans",
                       "--corpus", corpus_file, "--device", "cpu", "--cache-dir", tmp_path / "fresh-cache-2",
                       "--max-pixels", "1000", "--quiet")
    assert rc == 0, err
    assert "skipped wide.png: image is 10000 x 20 = 200000 pixels, over the limit of 1000 pixels" in out
    assert "skipped one.png" not in out


def test_pixel_limit_holds_for_images_already_in_the_feature_cache(tmp_path, tiny_spec, tiny, corpus_file):
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.new("RGB", (10_000, 20), (9, 9, 9)).save(folder / "wide.png")
    Image.new("RGB", (30, 20), (200, 9, 9)).save(folder / "small.png")
    cache = tmp_path / "cache"
    mine(folder, tmp_path / "run-default", config(tiny_spec, corpus_file), encoder=tiny, cache_dir=cache)
    run = mine(folder, tmp_path / "run-strict", config(tiny_spec, corpus_file, max_pixels=1000), encoder=tiny,
               cache_dir=cache)
    assert {r["path"]: r["status"] for r in run.image_records()}["wide.png"] == "skipped"


def test_cli_other_one_line_errors(tmp_path, tiny_spec, corpus_file):
    z = tmp_path / "images.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("a.jpg", b"x")
    # the CLI takes folders only: a zip is refused in one line (unpack it, or use the web app)
    rc, _, err = cli("mine", z, "--out", tmp_path / "r", "--encoder", tiny_spec, "--corpus", corpus_file)
    assert_one_line_error(rc, err, str(z), "folder not found")
    rc, _, err = cli("score", tmp_path / "no-such-run", str(z))
    assert_one_line_error(rc, err, "no-such-run")
    (tmp_path / "imgs").mkdir()
    shutil.copyfile(photo_sources(1)[0], tmp_path / "imgs" / "a.jpg")
    rc, _, err = cli("mine", tmp_path / "imgs", "--out", tmp_path / "r2", "--encoder", tiny_spec, "--corpus",
                     tmp_path / "missing-corpus.txt", "--device", "cpu", "--quiet")
    assert_one_line_error(rc, err, "missing-corpus.txt")


# ------------------------------------------------------------------------------------ zip uploads


def _zip(path: Path, entries: list[tuple[zipfile.ZipInfo | str, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for info, data in entries:
            zf.writestr(info, data)
    return path


@pytest.mark.parametrize("entry", ["../escape.jpg", "ok/../../escape.jpg", "..\\escape.jpg"])
def test_zip_parent_entries_are_refused(tmp_path, entry):
    z = _zip(tmp_path / "up.zip", [("good.jpg", b"\xff\xd8" + b"1" * 100), (entry, b"\xff\xd8" + b"2" * 100)])
    dest = tmp_path / "run" / "uploads"
    with pytest.raises(SafetyError, match=r"'\.\.'") as info:
        extract_zip(z, dest)
    assert repr(entry) in str(info.value)
    assert not dest.exists() and not (tmp_path / "run" / "escape.jpg").exists()
    assert not (tmp_path / "escape.jpg").exists()
    leftovers = list((tmp_path / "run").glob(".*extract*")) if (tmp_path / "run").exists() else []
    assert not leftovers  # the temporary extraction folder is gone too


@pytest.mark.parametrize("entry", ["/tmp/cm-abs-escape.jpg", "C:/Windows/evil.jpg", "C:\\evil.jpg"])
def test_zip_absolute_entries_are_refused(tmp_path, entry):
    z = _zip(tmp_path / "up.zip", [(entry, b"\xff\xd8" + b"1" * 100)])
    assert entry in zipfile.ZipFile(z).namelist()
    with pytest.raises(SafetyError, match="absolute path"):
        extract_zip(z, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_zip_symlink_entry_is_refused(tmp_path):
    info = zipfile.ZipInfo("link.jpg")
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    z = _zip(tmp_path / "up.zip", [("good.jpg", b"\xff\xd8" + b"1" * 100), (info, b"/etc/passwd")])
    with pytest.raises(SafetyError, match="symbolic link") as info_:
        extract_zip(z, tmp_path / "out")
    assert "link.jpg" in str(info_.value)
    assert not (tmp_path / "out").exists()


def test_zip_bomb_is_refused_before_unpacking(tmp_path):
    z = tmp_path / "bomb.zip"
    with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        with zf.open("bomb.png", "w", force_zip64=False) as fh:
            for _ in range(32):
                fh.write(b"\0" * (1 << 20))
    assert z.stat().st_size < 200_000
    t0 = time.perf_counter()
    with pytest.raises(SafetyError, match="zip bomb") as info:
        extract_zip(z, tmp_path / "out")
    assert time.perf_counter() - t0 < 5
    assert "bomb.png" in str(info.value)
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.extract")]


def _many_entry_zip(path: Path, n: int) -> None:
    """A genuine zip of ``n`` empty stored files, written directly (zipfile needs ~10 s for 100K)."""
    local, central = bytearray(), bytearray()
    for i in range(n):
        name = f"{i}.jpg".encode()
        offset = len(local)
        local += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 0, 0, 0, 0, 0, 0, len(name), 0) + name
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 0, 0, 0, 0, 0, 0, len(name), 0, 0, 0,
                               0, 0, offset) + name
    eocd = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, n & 0xFFFF, n & 0xFFFF, len(central), len(local), 0)
    if n > 0xFFFF:  # zip64 end records
        z64 = struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, n, n, len(central), len(local))
        loc = struct.pack("<IIQI", 0x07064B50, 0, len(local) + len(central), 1)
        eocd = z64 + loc + struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    path.write_bytes(bytes(local + central + eocd))


def test_zip_with_100k_entries_is_refused_by_count_quickly(tmp_path, monkeypatch):
    z = tmp_path / "many.zip"
    _many_entry_zip(z, 100_000)
    with zipfile.ZipFile(z) as zf:  # a real archive, not just a lying header
        assert len(zf.infolist()) == 100_000
    with open(z, "rb") as fh:
        assert declared_entry_count(fh) == 100_000

    import clustermine.workflows.uploads as uploads

    def no_parse(*a, **k):
        raise AssertionError("the central directory was parsed: the count check must come first")

    monkeypatch.setattr(uploads.zipfile, "ZipFile", no_parse)
    t0 = time.perf_counter()
    with pytest.raises(SafetyError, match="100,000 entries; the limit is 50,000"):
        extract_zip(z, tmp_path / "out")
    assert time.perf_counter() - t0 < 2.0
    assert not (tmp_path / "out").exists()


def test_good_zip_with_hostile_names_unpacks_to_safe_names(tmp_path):
    z = _zip(tmp_path / "up.zip", [("sub dir/$(touch x).jpg", b"\xff\xd8" + b"1" * 100),
                                   ("; rm -rf ~.jpg", b"\xff\xd8" + b"2" * 100),
                                   ("__MACOSX/._a.jpg", b"junk"), ("empty.jpg", b"")])
    rep = extract_zip(z, tmp_path / "out")
    names = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert names == ["rm_-rf.jpg", "sub_dir/touch_x.jpg"]
    assert [f.reason for f in rep.skipped] == ["empty file (0 bytes)"]
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------------------------ upload limits


class _Upload(io.BytesIO):
    def __init__(self, name: str, data: bytes) -> None:
        super().__init__(data)
        self.name, self.size = name, len(data)


def test_upload_count_size_and_total_limits(tmp_path):
    limits = UploadLimits(max_file_bytes=1000, max_files=3, max_total_bytes=1500)
    with pytest.raises(SafetyError, match="4 files in one upload; the limit is 3"):
        save_uploads([_Upload(f"{i}.jpg", b"x" * 10) for i in range(4)], tmp_path / "a", limits=limits)
    assert not (tmp_path / "a").exists() or not any((tmp_path / "a").iterdir())
    rep = save_uploads([_Upload("big.jpg", b"x" * 1001), _Upload("ok1.jpg", b"x" * 800),
                        _Upload("ok2.jpg", b"x" * 800)], tmp_path / "b", limits=limits)
    assert [f.display_name for f in rep.saved] == ["ok1.jpg"]
    reasons = {f.display_name: f.reason for f in rep.skipped}
    assert "per-file limit" in reasons["big.jpg"] and "total upload limit" in reasons["ok2.jpg"]
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["ok1.jpg"]  # partial big file removed
    saved = save_upload(_Upload("../../etc/passwd", b"root"), tmp_path / "c", "../../etc/passwd")
    assert saved.stored_name == "passwd" and Path(saved.path).parent == tmp_path / "c"


def test_streamlit_upload_limit_and_localhost_binding_are_configured():
    cfg = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text(encoding="utf-8"))
    assert cfg["server"]["address"] == "127.0.0.1"
    assert cfg["browser"]["serverAddress"] == "127.0.0.1"
    assert cfg["browser"]["gatherUsageStats"] is False
    assert 0 < int(cfg["server"]["maxUploadSize"]) <= 4096  # MB; bounded


# ------------------------------------------------------------------------------------ server-side folders


@pytest.fixture
def roots(tmp_path):
    data = tmp_path / "data"
    (data / "set1" / "sub").mkdir(parents=True)
    (data / "set1" / "img.jpg").write_bytes(b"x")
    secret = tmp_path / "secret"
    secret.mkdir()
    (tmp_path / "data-evil").mkdir()  # shares a string prefix with the root
    os.symlink(secret, data / "link_out")
    os.symlink(data / "set1", data / "link_in")  # even a link that stays inside is refused
    return {"data": data, "secret": secret, "tmp": tmp_path}


@pytest.mark.parametrize("typed", ["..", "../secret", "set1/../../secret", "set1/..", "set1\\..\\..\\secret",
                                   "{data}/../secret", "{data}/set1/../../secret"])
def test_folder_paths_with_dotdot_are_refused(roots, typed):
    with pytest.raises(SafetyError, match=r"'\.\.' is not allowed"):
        resolve_in_roots(typed.format(data=roots["data"]), [roots["data"]])


@pytest.mark.parametrize("typed", ["{secret}", "/etc", "/", "{tmp}/data-evil", "~", "~/"])
def test_absolute_paths_outside_the_roots_are_refused(roots, typed):
    with pytest.raises(SafetyError, match="outside the allowed data folders|not found"):
        resolve_in_roots(typed.format(**{k: str(v) for k, v in roots.items()}), [roots["data"]])


@pytest.mark.parametrize("typed", ["link_out", "link_in", "link_in/sub", "{data}/link_out", "{data}/link_in/sub"])
def test_symlinks_on_the_way_are_refused(roots, typed):
    with pytest.raises(SafetyError, match="symbolic link"):
        resolve_in_roots(typed.format(data=roots["data"]), [roots["data"]])


def test_paths_inside_the_roots_resolve(roots):
    data = roots["data"].resolve()
    assert resolve_in_roots("set1", [roots["data"]]) == data / "set1"
    assert resolve_in_roots(str(roots["data"] / "set1" / "sub"), [roots["data"]]) == data / "set1" / "sub"
    with pytest.raises(SafetyError, match="not a folder"):
        resolve_in_roots("set1/img.jpg", [roots["data"]])
    with pytest.raises(SafetyError, match="NUL"):
        resolve_in_roots("set1\x00/etc", [roots["data"]])
    with pytest.raises(SafetyError, match="no data folders"):
        resolve_in_roots("set1", [])
    # a root configured through a symbolic link still works, lexically and resolved
    alias = roots["tmp"] / "alias"
    os.symlink(roots["data"], alias)
    assert resolve_in_roots(str(alias / "set1"), [alias]) == data / "set1"
    assert resolve_in_roots(str(data / "set1"), [alias]) == data / "set1"
    assert resolve_in_roots("set1/sub", [alias]) == data / "set1" / "sub"
    with pytest.raises(SafetyError, match="outside the allowed"):
        resolve_in_roots(str(roots["secret"]), [alias])


def test_data_roots_come_from_the_environment(tmp_path, monkeypatch):
    from clustermine.workflows.uploads import default_data_roots

    a = tmp_path / "a"
    a.mkdir()
    monkeypatch.setenv("CLUSTERMINE_DATA_ROOTS", os.pathsep.join([str(a), str(tmp_path / "missing")]))
    assert default_data_roots(tmp_path / "runs") == [a.resolve()]


# ------------------------------------------------------------------------------------ no shell, no HTML


def _py_files() -> list[Path]:
    files = [ROOT / "app.py"]
    for d in ("clustermine", "pages", "ui"):
        files += sorted((ROOT / d).rglob("*.py"))
    return [f for f in files if f.is_file()]


def _call_name(node: ast.Call) -> str:
    f = node.func
    parts = []
    while isinstance(f, ast.Attribute):
        parts.append(f.attr)
        f = f.value
    if isinstance(f, ast.Name):
        parts.append(f.id)
    return ".".join(reversed(parts))


def test_no_user_input_reaches_a_shell():
    """No shell=True, os.system, os.popen (or other shell-running helpers) in the engine or the app."""
    offences = []
    shell_calls = {"os.system", "os.popen", "subprocess.getoutput", "subprocess.getstatusoutput", "pty.spawn",
                   "os.execl", "os.execlp", "os.spawnl", "os.spawnlp", "commands.getoutput"}
    for path in _py_files():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                name = _call_name(node)
                if name in shell_calls or name.endswith(".system") or name.endswith(".popen"):
                    offences.append(f"{path.relative_to(ROOT)}:{node.lineno} {name}()")
                for kw in node.keywords:
                    if kw.arg == "shell" and not (isinstance(kw.value, ast.Constant) and not kw.value.value):
                        offences.append(f"{path.relative_to(ROOT)}:{node.lineno} shell=...")
        text = path.read_text(encoding="utf-8")
        for needle in ("shell=True", "os.system(", "os.popen("):
            if needle in text:
                offences.append(f"{path.relative_to(ROOT)}: contains {needle!r}")
    assert not offences, offences


# Every place the app may render raw HTML, reviewed: (file, enclosing function, call). A new one fails
# this test until it is reviewed and added here with the reason it never carries user data.
REVIEWED_HTML_SITES = {
    ("ui/widgets.py", "inject_css", "st.html"),  # a constant <style> block from assets/, no user data
}


def test_raw_html_is_never_used_with_user_data():
    found = set()
    for path in _py_files():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        parents = {}
        for node in ast.walk(tree):
            for child in ast.iter_child_nodes(node):
                parents[child] = node

        def enclosing(node) -> str:
            while node in parents:
                node = parents[node]
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    return node.name
            return "<module>"

        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            name = _call_name(node)
            html_kw = any(kw.arg == "unsafe_allow_html" and not (isinstance(kw.value, ast.Constant)
                                                                  and kw.value.value is False)
                          for kw in node.keywords)
            if html_kw or name in ("st.html", "html", "components.html", "st.components.v1.html") \
                    or name.endswith("components.v1.html"):
                found.add((path.relative_to(ROOT).as_posix(), enclosing(node), "unsafe_allow_html" if html_kw
                           else name))
    assert found <= REVIEWED_HTML_SITES, f"unreviewed raw-HTML rendering: {sorted(found - REVIEWED_HTML_SITES)}"


def test_md_escape_neutralises_markup():
    from ui.text import md_escape

    out = md_escape("<script>alert(1)</script> **bold** [x](javascript:alert(1))")
    assert "<script>" not in out and "](javascript:" not in out


# ------------------------------------------------------------------------------------ hostile checkpoints


class _Payload:
    """Unpickling this runs a shell command: a hostile checkpoint."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def _evil_checkpoint(folder: Path) -> tuple[Path, Path]:
    marker = folder / "PWNED"
    evil = folder / "evil.pt"
    evil.write_bytes(pickle.dumps({"state_dict": {"visual.x": _Payload(f"touch {shlex.quote(str(marker))}")}},
                                  protocol=2))
    return evil, marker


def test_cli_refuses_a_pickled_checkpoint_in_process(tmp_path, tiny_spec, corpus_file, cache_dir):
    evil, marker = _evil_checkpoint(tmp_path)
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    shutil.copyfile(photo_sources(1)[0], imgs / "a.jpg")
    arch = tiny_spec.split(":")[1]
    rc, _, err = cli("mine", imgs, "--out", tmp_path / "run", "--encoder", f"openclip:{arch}@{evil}", "--corpus",
                     corpus_file, "--device", "cpu", "--cache-dir", cache_dir, "--quiet")
    assert_one_line_error(rc, err, str(evil), "refused")
    assert not marker.exists()
    run = Run.open(tmp_path / "run", require_complete=False)
    assert run.status == "failed" and str(evil) in run.meta["error"]


def test_real_cli_process_refuses_a_pickled_checkpoint(tmp_path, hostile, corpus_file):
    """`python -m clustermine` in a fresh process (run from a scratch folder, on the hostile folder):
    one-line error, no traceback, the payload never runs."""
    evil, marker = _evil_checkpoint(tmp_path)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    env = dict(os.environ, CLUSTERMINE_CACHE=str(tmp_path / "cache"), HF_HUB_OFFLINE="1",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "clustermine", "mine", str(hostile["folder"]), "--out",
                           str(tmp_path / "run"), "--encoder", f"openclip:ViT-B-32@{evil}", "--corpus",
                           str(corpus_file), "--device", "cpu", "--quiet"],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert_one_line_error(proc.returncode, proc.stderr, str(evil), "refused")
    assert not marker.exists()
    assert not (cwd / "x").exists() and not (cwd / "y").exists()
    assert Run.open(tmp_path / "run", require_complete=False).status == "failed"


def test_pil_global_bomb_limit_is_untouched_and_truncated_images_are_not_loaded():
    """Guards the decoding settings the skips above rely on."""
    from PIL import ImageFile

    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    assert Image.MAX_IMAGE_PIXELS is not None
