"""Refusals of clustermine.workflows.uploads (hostile archives, path escapes, oversized input) and the
escaping of user text in the web app."""

from __future__ import annotations

import io
import os
import stat
import zipfile
from pathlib import Path

import pytest

from clustermine.workflows import concept_edits
from clustermine.core.errors import SafetyError
from clustermine.workflows.uploads import (
    UploadLimits,
    check_run_id,
    count_folder,
    count_names,
    count_zip,
    declared_entry_count,
    extract_zip,
    nothing_usable,
    resolve_in_roots,
    safe_filename,
    save_upload,
    save_uploads,
    write_upload_manifest,
)

JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 64  # content does not matter to the upload layer


def make_zip(path: Path, entries: list[tuple[str, bytes]], compression=zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, data in entries:
            zf.writestr(name, data)
    return path


def all_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


# ------------------------------------------------------------------------------------ names
@pytest.mark.parametrize("raw, expected", [
    ("cat.JPG", "cat.JPG"),  # the extension keeps its case: names are shown as uploaded
    ("../../etc/passwd", "passwd"),
    ("..\\..\\win.ini", "win.ini"),
    ("/abs/path/x.png", "x.png"),
    ("..", "file"),
    (".hidden.png", "hidden.png"),
    ("<script>alert(1)</script>.png", "script.png"),
    ("<b>x</b> y.png", "b_y.png"),
    ("naïve café.jpeg", "naive_cafe.jpeg"),
    ("", "file"),
])
def test_safe_filename(raw, expected):
    out = safe_filename(raw)
    assert out == expected
    assert "/" not in out and "\\" not in out and not out.startswith(".")


def test_safe_filename_is_bounded():
    assert len(safe_filename("a" * 5000 + ".png")) <= 120
    assert safe_filename("a" * 5000 + ".png").endswith(".png")


@pytest.mark.parametrize("bad", ["../x", "a/b", "", ".hidden", "x" * 200, "a..b"])
def test_check_run_id_refuses(bad):
    with pytest.raises(SafetyError):
        check_run_id(bad)


def test_new_run_id_is_a_url_safe_slug():
    from clustermine.workflows.uploads import new_run_id

    assert new_run_id("My run 2") == "my-run-2"
    assert new_run_id("../../etc/passwd") == "etc-passwd"
    assert new_run_id("Café <b>x</b>") == "cafe-b-x-b"
    assert new_run_id("...").startswith("run-")
    check_run_id(new_run_id("ünïcode ☃ name"))


def test_check_run_id_accepts():
    assert check_run_id("run-2024_01.a") == "run-2024_01.a"


# ------------------------------------------------------------------------------------ uploads
def test_save_upload_sanitises_and_never_overwrites(tmp_path):
    a = save_upload(io.BytesIO(JPEG), tmp_path, "../../evil.jpg")
    b = save_upload(io.BytesIO(JPEG), tmp_path, "evil.jpg")
    assert a.status == b.status == "saved"
    assert a.display_name == "../../evil.jpg"  # kept as text only
    assert Path(a.path).parent == tmp_path and Path(b.path).parent == tmp_path
    assert a.stored_name == "evil.jpg" and b.stored_name == "evil-1.jpg"
    assert not (tmp_path.parent.parent / "evil.jpg").exists()


def test_save_upload_refuses_huge_and_empty(tmp_path):
    big = save_upload(io.BytesIO(b"x" * 5000), tmp_path, "big.png", max_bytes=1000)
    empty = save_upload(io.BytesIO(b""), tmp_path, "empty.png")
    assert big.status == "skipped" and "limit" in big.reason
    assert empty.status == "skipped" and "empty" in empty.reason
    assert all_files(tmp_path) == []  # partial files are removed


def test_save_upload_does_not_follow_a_planted_symlink(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("keep")
    folder = tmp_path / "up"
    folder.mkdir()
    (folder / "x.png").symlink_to(outside)
    saved = save_upload(io.BytesIO(JPEG), folder, "x.png")
    assert saved.stored_name == "x-1.png"
    assert outside.read_text() == "keep"


class _Upload(io.BytesIO):
    def __init__(self, name, data):
        super().__init__(data)
        self.name, self.size = name, len(data)


def test_save_uploads_limits(tmp_path):
    files = [_Upload(f"{i}.jpg", JPEG) for i in range(5)]
    with pytest.raises(SafetyError, match="limit is 3"):
        save_uploads(files, tmp_path / "a", limits=UploadLimits(max_files=3))
    rep = save_uploads(files, tmp_path / "b", limits=UploadLimits(max_total_bytes=len(JPEG) * 2))
    assert rep.n_saved == 2 and len(rep.skipped) == 3
    assert "total upload limit" in rep.skipped[0].reason


# ------------------------------------------------------------------------------------ zip archives
def test_extract_good_zip_keeps_structure(tmp_path):
    z = make_zip(tmp_path / "ok.zip", [("cls a/1.jpg", JPEG), ("cls b/2.JPG", JPEG), ("__MACOSX/._1.jpg", b"x"),
                                       (".DS_Store", b"x"), ("notes/", b"")])
    rep = extract_zip(z, tmp_path / "out")
    names = sorted(str(p.relative_to(tmp_path / "out")) for p in all_files(tmp_path / "out"))
    assert names == ["cls_a/1.jpg", "cls_b/2.JPG"]  # the user's own extension case is kept (issue 18, 10)
    assert rep.n_saved == 2 and all(Path(f.path).is_file() for f in rep.saved)


@pytest.mark.parametrize("name", ["../evil.jpg", "a/../../evil.jpg", "..\\evil.jpg", "ok/..\\..\\evil.jpg"])
def test_zip_with_parent_entries_is_refused(tmp_path, name):
    z = make_zip(tmp_path / "bad.zip", [("fine.jpg", JPEG), (name, JPEG)])
    (tmp_path / "sub").mkdir()
    with pytest.raises(SafetyError, match=r"outside the archive folder"):
        extract_zip(z, tmp_path / "sub" / "out")
    assert not (tmp_path / "sub" / "out").exists()
    assert not (tmp_path / "evil.jpg").exists() and not (tmp_path / "sub" / "evil.jpg").exists()
    assert [p for p in (tmp_path / "sub").iterdir()] == []  # no temporary folder left behind


@pytest.mark.parametrize("name", ["/etc/evil.jpg", "C:/evil.jpg", "c:\\evil.jpg"])
def test_zip_with_absolute_entries_is_refused(tmp_path, name):
    z = make_zip(tmp_path / "abs.zip", [(name, JPEG)])
    with pytest.raises(SafetyError, match="absolute path"):
        extract_zip(z, tmp_path / "out")
    assert all_files(tmp_path / "out") == []


def test_zip_with_symlink_entry_is_refused(tmp_path):
    info = zipfile.ZipInfo("link.jpg")
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    with zipfile.ZipFile(tmp_path / "link.zip", "w") as zf:
        zf.writestr("ok.jpg", JPEG)
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(SafetyError, match="symbolic link"):
        extract_zip(tmp_path / "link.zip", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_zip_bomb_is_refused(tmp_path):
    # 64 MiB of zeros deflate to ~64 KiB: a ratio of ~1000:1.
    z = tmp_path / "bomb.zip"
    with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open("bomb.png", "w") as fh:
            block = b"\x00" * (1 << 20)
            for _ in range(64):
                fh.write(block)
    assert z.stat().st_size < 1 << 20
    with pytest.raises(SafetyError, match="zip bomb"):
        extract_zip(z, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_zip_over_total_size_is_refused(tmp_path):
    z = make_zip(tmp_path / "big.zip", [(f"{i}.jpg", os.urandom(4096)) for i in range(4)])
    with pytest.raises(SafetyError, match="unpacks to more than"):
        extract_zip(z, tmp_path / "out", limits=UploadLimits(max_total_bytes=10_000))
    assert not (tmp_path / "out").exists()


def test_zip_lying_about_its_size_is_refused(tmp_path):
    z = make_zip(tmp_path / "lie.zip", [("a.jpg", b"A" * 10_000)])
    data = bytearray(z.read_bytes())
    # Patch the central directory's uncompressed size (offset 24 in the record) to 100 bytes.
    cd = data.rfind(b"PK\x01\x02")
    data[cd + 24:cd + 28] = (100).to_bytes(4, "little")
    lh = data.find(b"PK\x03\x04")
    data[lh + 22:lh + 26] = (100).to_bytes(4, "little")
    (tmp_path / "lie2.zip").write_bytes(bytes(data))
    try:
        rep = extract_zip(tmp_path / "lie2.zip", tmp_path / "out")
    except SafetyError:
        assert not (tmp_path / "out").exists()
    else:  # zipfile stops at the declared size and the CRC check fails: the entry is skipped
        assert rep.n_saved == 0 and "could not be unpacked" in rep.skipped[0].reason
        assert all(p.stat().st_size <= 100 for p in all_files(tmp_path / "out"))


def test_zip_with_100k_entries_is_refused_quickly(tmp_path):
    z = tmp_path / "many.zip"
    with zipfile.ZipFile(z, "w", zipfile.ZIP_STORED) as zf:
        for i in range(100_000):
            zf.writestr(f"{i}.jpg", b"")
    with open(z, "rb") as fh:
        assert declared_entry_count(fh) == 100_000
    with pytest.raises(SafetyError, match="100,000 entries"):
        extract_zip(z, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_not_a_zip_is_refused(tmp_path):
    (tmp_path / "x.zip").write_bytes(b"not a zip at all")
    with pytest.raises(SafetyError, match="not a readable zip"):
        extract_zip(tmp_path / "x.zip", tmp_path / "out")


def _folder_only_zip(path: Path, folders: list[str]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for f in folders:
            zf.writestr(zipfile.ZipInfo(f), b"")  # a name ending in "/" is a folder entry
    return path


@pytest.mark.parametrize("entries, folders, needle", [
    ([], [], "empty.zip is empty: it holds no files"),
    ([], ["photos/", "photos/cats/"], "empty.zip holds only folders (2, e.g. photos/; photos/cats/): it holds no files"),
    ([("__MACOSX/._a.jpg", b"x"), (".DS_Store", b"x")], ["photos/"],
     "empty.zip holds no image: only hidden files or macOS metadata, which are ignored (__MACOSX/._a.jpg; .DS_Store)"),
])
def test_a_zip_with_nothing_usable_says_what_is_wrong(tmp_path, entries, folders, needle):
    """Before launch (count_zip) and after unpacking (nothing_usable), the same sentence names the zip
    and what it holds, not just "no file could be used"."""
    z = _folder_only_zip(tmp_path / "empty.zip", folders)
    with zipfile.ZipFile(z, "a") as zf:
        for name, data in entries:
            zf.writestr(name, data)
    with open(z, "rb") as fh:
        counted = count_zip(fh, "empty.zip")
        assert fh.tell() == 0  # rewound for the upload that follows
    assert counted.n_images == 0 and counted.problem == needle
    report = extract_zip(z, tmp_path / "out")
    assert report.n_saved == 0 and nothing_usable(report, "empty.zip") == needle


def test_a_zip_whose_files_cannot_be_used_names_each_file(tmp_path):
    z = make_zip(tmp_path / "mine.zip", [("a.jpg", b""), ("b/c.png", b"")])
    with open(z, "rb") as fh:
        assert count_zip(fh, "mine.zip").n_images == 2  # image names: Launch may go on
    report = extract_zip(z, tmp_path / "out")
    assert nothing_usable(report, "mine.zip") == ("mine.zip: none of its 2 file(s) could be used "
                                                  "(a.jpg: empty file (0 bytes); b/c.png: empty file (0 bytes))")
    z2 = make_zip(tmp_path / "docs.zip", [("notes.pdf", b"%PDF"), ("x/readme.md", b"#")])
    with open(z2, "rb") as fh:
        counted = count_zip(fh, "docs.zip")
    assert counted.n_images == 0
    assert counted.problem == ("none of the 2 file(s) in docs.zip is an image (notes.pdf: not an image file type; "
                               "x/readme.md: not an image file type)")
    good = make_zip(tmp_path / "good.zip", [("a.JPG", JPEG), ("sub/", b""), ("b.txt", b"x")])
    with open(good, "rb") as fh:
        assert count_zip(fh, "good.zip") == type(counted)(1, None)
    report = extract_zip(good, tmp_path / "out2")
    assert nothing_usable(report, "good.zip") is None


def test_counting_names_files_folders_and_refusals(tmp_path):
    assert count_names([]).n_images == 0 and count_names([]).problem is None  # nothing chosen yet
    assert count_names(["a.txt", "b.PNG"]).n_images == 1
    assert "a.txt: not an image file type" in count_names(["a.txt"]).problem
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "sub" / "x.jpeg").write_bytes(JPEG)
    (tmp_path / "d" / ".hidden.jpg").write_bytes(JPEG)
    assert count_folder(tmp_path / "d").n_images == 1
    (tmp_path / "e").mkdir()
    assert "holds no image file" in count_folder(tmp_path / "e").problem
    (tmp_path / "bad.zip").write_bytes(b"not a zip")
    with open(tmp_path / "bad.zip", "rb") as fh:
        assert count_zip(fh, "bad.zip").problem.startswith("bad.zip is not a readable zip archive")
    esc = make_zip(tmp_path / "esc.zip", [("../evil.jpg", JPEG)])
    with open(esc, "rb") as fh:
        assert "esc.zip: archive entry '../evil.jpg' points outside" in count_zip(fh, "esc.zip").problem


def test_extract_into_non_empty_folder_is_refused(tmp_path):
    z = make_zip(tmp_path / "ok.zip", [("1.jpg", JPEG)])
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("x")
    with pytest.raises(SafetyError, match="not empty"):
        extract_zip(z, tmp_path / "out")


# ------------------------------------------------------------------------------------ server folders
@pytest.fixture
def roots(tmp_path):
    root = tmp_path / "data"
    (root / "set_a" / "cls").mkdir(parents=True)
    (root / "set_a" / "cls" / "1.jpg").write_bytes(JPEG)
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "s.jpg").write_bytes(JPEG)
    (root / "link_out").symlink_to(secret, target_is_directory=True)
    (root / "set_a" / "inner_link").symlink_to(root / "set_a" / "cls", target_is_directory=True)
    return root, secret


def test_resolve_relative_and_absolute_inside(roots):
    root, _ = roots
    assert resolve_in_roots("set_a", [root]) == (root / "set_a").resolve()
    assert resolve_in_roots(str(root / "set_a" / "cls"), [root]) == (root / "set_a" / "cls").resolve()
    assert resolve_in_roots(str(root), [root]) == root.resolve()


@pytest.mark.parametrize("path", ["../secret", "set_a/../../secret", "set_a/..", "..\\secret"])
def test_resolve_refuses_dotdot(roots, path):
    root, _ = roots
    with pytest.raises(SafetyError, match=r"'\.\.'"):
        resolve_in_roots(path, [root])


def test_resolve_refuses_absolute_outside(roots):
    root, secret = roots
    with pytest.raises(SafetyError, match="outside the allowed"):
        resolve_in_roots(str(secret), [root])
    with pytest.raises(SafetyError, match="outside the allowed"):
        resolve_in_roots("/etc", [root])


@pytest.mark.parametrize("path", ["link_out", "set_a/inner_link"])
def test_resolve_refuses_symlinks(roots, path):
    root, _ = roots
    with pytest.raises(SafetyError, match="symbolic link"):
        resolve_in_roots(path, [root])
    with pytest.raises(SafetyError, match="symbolic link"):
        resolve_in_roots(str(root / path), [root])


def test_resolve_refuses_missing_empty_and_files(roots):
    root, _ = roots
    with pytest.raises(SafetyError, match="not found"):
        resolve_in_roots("nope", [root])
    with pytest.raises(SafetyError, match="enter a folder"):
        resolve_in_roots("  ", [root])
    with pytest.raises(SafetyError, match="not a folder"):
        resolve_in_roots("set_a/cls/1.jpg", [root])
    with pytest.raises(SafetyError, match="no data folders"):
        resolve_in_roots("set_a", [])


def test_default_data_roots_from_env(tmp_path, monkeypatch):
    from clustermine.workflows.uploads import default_data_roots

    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    monkeypatch.setenv("CLUSTERMINE_DATA_ROOTS", os.pathsep.join([str(a), str(b)]))
    assert default_data_roots() == [a.resolve()]  # missing folders are dropped


def test_default_data_roots_are_shared_data_and_run_uploads(tmp_path, monkeypatch):
    from clustermine.workflows.uploads import default_data_roots

    monkeypatch.delenv("CLUSTERMINE_DATA_ROOTS", raising=False)
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")  # ../shared/data is looked up from the working directory
    (tmp_path / "shared" / "data").mkdir(parents=True)
    runs = tmp_path / "runs"
    (runs / "r1" / "uploads").mkdir(parents=True)
    (runs / "r2").mkdir()
    (runs / "r3").symlink_to(runs / "r1", target_is_directory=True)
    roots = default_data_roots(runs)
    assert roots == [(tmp_path / "shared" / "data").resolve(), (runs / "r1" / "uploads").resolve()]
    assert runs.resolve() not in roots


# ------------------------------------------------------------------------------------ user text in the app
@pytest.mark.app
def test_script_concept_is_rendered_escaped(small_run, monkeypatch):
    """A concept named <script>alert(1)</script> shows as text; no element renders it as HTML."""
    from streamlit.testing.v1 import AppTest

    from clustermine.store import Run

    evil = "<script>alert(1)</script>"
    run = Run.open(small_run)
    concept_edits.edit_concept(run, "add", evil, user="tester")
    monkeypatch.setenv("CLUSTERMINE_RUNS_ROOT", str(small_run.parent))
    monkeypatch.setenv("CLUSTERMINE_UMAP_WARMUP", "0")
    app = Path(__file__).resolve().parents[1] / "app.py"
    at = AppTest.from_file(str(app), default_timeout=120)
    at.query_params["run"] = small_run.name
    at.run()
    at.switch_page("pages/concepts.py").run()
    assert not at.exception
    # The concept is in the table, as data.
    tables = [d.value for d in at.dataframe]
    assert any(evil in set(t["concept"]) for t in tables if "concept" in getattr(t, "columns", []))
    # No element that renders HTML carries it unescaped.
    for md in at.markdown:
        if md.proto.allow_html:
            assert evil not in md.value
    assert all(evil not in h.proto.body for h in at.html)  # st.html is only used for the static stylesheet
    # Where it appears in markdown it is backslash-escaped (rendered as literal text).
    for md in at.markdown:
        assert "<script>" not in md.value


# ------------------------------------------------------------------------------------ the user's names, kept
def test_uploaded_names_are_kept_in_image_names_csv_and_search(small_images, tmp_path):
    """Real photos uploaded as X.JPEG, Y.Jpg and 'my photo (1).JPEG' (+ 9 under their own names) and
    mined: the run's image names, the exported CSV and the search results show each name exactly as
    uploaded (extension case included), and the stored files keep the extension's case too."""
    import csv

    from clustermine.workflows.pipeline import MineConfig, mine
    from clustermine.store import layout
    from clustermine.store import Run
    from clustermine.workflows.search import search_text
    from clustermine.workflows.tables import image_table_csv

    photos = [p for cls in ("n01440764", "n03028079") for p in sorted((small_images / cls).iterdir())[:6]]
    names = ["X.JPEG", "Y.Jpg", "my photo (1).JPEG"] + [p.name for p in photos[3:]]
    files = []
    for name, p in zip(names, photos):
        f = io.BytesIO(p.read_bytes())
        f.name = name
        files.append(f)
    run_dir = tmp_path / "run"
    cfg = MineConfig(n_clusters=2, clusterer="kmeans", seed=0).validate().resolved()
    uploads = layout.uploads_dir(run_dir.resolve())
    d = cfg.to_dict()
    d["images_dir"] = str(uploads)
    Run.create(run_dir, d)  # as the app does: the run first, then its uploads, then the worker mines
    report = save_uploads(files, uploads)
    write_upload_manifest(run_dir, report)
    assert {f.stored_name for f in report.saved} >= {"X.JPEG", "Y.Jpg", "my_photo_1.JPEG"}
    mine(uploads, run_dir, cfg)
    run = Run.open(run_dir)

    assert sorted(run.image_names()) == sorted(names)
    rows = {n: i for i, n in enumerate(run.image_names())}
    assert run.image_names([rows["Y.Jpg"], rows["X.JPEG"]]) == ["Y.Jpg", "X.JPEG"]

    table = list(csv.DictReader(io.StringIO(image_table_csv(run))))
    assert sorted(r["name"] for r in table) == sorted(names)
    by_name = {r["name"]: r for r in table}
    assert by_name["X.JPEG"]["path"] == "X.JPEG" and by_name["Y.Jpg"]["path"] == "Y.Jpg"
    assert by_name["my photo (1).JPEG"]["path"] == "my_photo_1.JPEG"  # stored name sanitised, shown as given

    hits = search_text(run, "tench", k=len(names))
    assert sorted(h.name for h in hits) == sorted(names)
    assert all(h.name == run.image_names([h.row])[0] for h in hits)
