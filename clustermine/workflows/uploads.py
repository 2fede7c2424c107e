"""Safe intake of user-supplied files: browser uploads, zip archives and server-side folder paths.

Three doors lead user data onto the server, and each one is guarded here (the web app only calls
these functions; it never builds a path from a client-supplied name itself):

- :func:`save_upload` / :func:`save_uploads` stream uploaded files to disk under a **sanitised**
  name (the client's name is kept as display text only), with per-file, count and total limits;
- :func:`extract_zip` unpacks an archive refusing path escapes (``../``), absolute paths, drive
  letters, symbolic links, encrypted entries, too many entries, too many uncompressed bytes and
  suspicious compression ratios (zip bombs). The archive is checked as a whole before one byte is
  written, decompressed sizes are counted again while streaming (a lying header cannot get past),
  and extraction happens in a temporary folder that only replaces the destination on success;
- :func:`resolve_in_roots` confines a typed folder path to the configured data roots
  (``$CLUSTERMINE_DATA_ROOTS``): no ``..``, no symbolic link on the way, nothing outside.

Every refusal is a :class:`~clustermine.core.errors.SafetyError` whose message says what was refused and
why, in words a user can act on.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import struct
import tempfile
import unicodedata
import uuid
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import BinaryIO, Iterable

from clustermine.core.errors import SafetyError
from clustermine.store import layout
from clustermine.core.storage import atomic_write_json
from clustermine.method.images import IMAGE_EXTENSIONS

MiB = 1 << 20
GiB = 1 << 30
_CHUNK = 1 << 20


@dataclass(frozen=True)
class UploadLimits:
    """Limits on what one upload (a batch of files, or one archive) may bring in.

    ``max_ratio`` applies to archive entries larger than ``ratio_min_bytes`` (tiny files compress
    well without being dangerous); photos (JPEG / PNG / WebP) barely compress at all.
    """

    max_file_bytes: int = 256 * MiB  # one image file
    max_files: int = 50_000  # files in one batch or archive entries in one zip
    max_total_bytes: int = 8 * GiB  # uncompressed bytes in one batch / archive
    max_ratio: float = 100.0  # uncompressed / compressed size of one archive entry
    ratio_min_bytes: int = 1 * MiB


DEFAULT_LIMITS = UploadLimits()

_SAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
_DRIVE = re.compile(r"^[A-Za-z]:")
_MAX_NAME = 120


# ------------------------------------------------------------------------------------ names
def safe_filename(name: str, default: str = "file") -> str:
    """A harmless file name derived from a client-supplied one.

    Only the last path component is kept (``/`` and ``\\`` both count as separators), Unicode is
    folded to ASCII, anything outside ``[A-Za-z0-9._-]`` becomes ``_``, leading dots are removed (no
    hidden files, no ``..``), the extension keeps its case (``X.JPEG`` stays ``X.JPEG``: names are
    shown and exported as the user gave them) and the whole is at most 120 characters.
    Never empty: ``default`` is used when nothing printable is left.
    """
    base = re.split(r"[\\/]", str(name or ""))[-1]
    base = unicodedata.normalize("NFKD", base).encode("ascii", "ignore").decode("ascii")
    base = _SAFE_CHARS.sub("_", base).strip("._ ")
    stem, dot, ext = base.rpartition(".")
    if not dot:
        stem, ext = base, ""
    stem = stem.strip("._ ") or default
    ext = ext[:16]
    keep = _MAX_NAME - (len(ext) + 1 if ext else 0)
    return f"{stem[:keep]}.{ext}" if ext else stem[:keep]


def unique_path(folder: Path, name: str) -> Path:
    """``folder / name``, or ``stem-1.ext``, ``stem-2.ext``... when that name is taken."""
    candidate = folder / name
    if not os.path.lexists(candidate):
        return candidate
    stem, dot, ext = name.rpartition(".")
    if not dot:
        stem, ext = name, ""
    for i in range(1, 1_000_000):
        candidate = folder / (f"{stem}-{i}.{ext}" if ext else f"{stem}-{i}")
        if not os.path.lexists(candidate):
            return candidate
    raise SafetyError(f"{folder}: too many files named {name!r}")


def _open_new(path: Path):
    """Open a brand-new file for writing; never follows or replaces an existing entry."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    return os.fdopen(os.open(path, flags, 0o644), "wb")


# ------------------------------------------------------------------------------------ uploads
@dataclass
class SavedFile:
    """One uploaded file: the client's name (display text only) and where it was stored, if at all."""

    display_name: str
    stored_name: str | None
    path: str | None
    size: int
    status: str  # "saved" | "skipped"
    reason: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class UploadReport:
    """What a batch upload or an archive extraction produced."""

    folder: str
    saved: list[SavedFile] = field(default_factory=list)
    skipped: list[SavedFile] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # archive entries left out silently: folders, hidden files

    @property
    def n_saved(self) -> int:
        return len(self.saved)

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.saved)

    def to_dict(self) -> dict:
        return {"folder": self.folder, "saved": [f.to_dict() for f in self.saved],
                "skipped": [f.to_dict() for f in self.skipped]}


def save_upload(fileobj: BinaryIO, folder: str | os.PathLike, display_name: str, *,
                max_bytes: int = DEFAULT_LIMITS.max_file_bytes, stored_name: str | None = None) -> SavedFile:
    """Stream one uploaded file into ``folder`` under a sanitised, unique name.

    ``display_name`` (the client's name) is only recorded; the stored name comes from
    :func:`safe_filename`. A file over ``max_bytes`` or an empty one is not kept (the partial file
    is removed) and comes back with ``status="skipped"`` and a reason.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    display = str(display_name or "")
    target = unique_path(folder, stored_name or safe_filename(display))
    size = 0
    try:
        if hasattr(fileobj, "seek"):
            try:
                fileobj.seek(0)
            except (OSError, ValueError):
                pass
        with _open_new(target) as out:
            while True:
                chunk = fileobj.read(_CHUNK)
                if not chunk:
                    break
                size += len(chunk)
                if size > max_bytes:
                    raise _TooBig()
                out.write(chunk)
    except _TooBig:
        target.unlink(missing_ok=True)
        return SavedFile(display, None, None, size, "skipped",
                         f"larger than the per-file limit of {_fmt_bytes(max_bytes)}")
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    if size == 0:
        target.unlink(missing_ok=True)
        return SavedFile(display, None, None, 0, "skipped", "empty file (0 bytes)")
    return SavedFile(display, target.name, str(target), size, "saved")


class _TooBig(Exception):
    pass


def save_uploads(files: Iterable, folder: str | os.PathLike, *, limits: UploadLimits = DEFAULT_LIMITS) -> UploadReport:
    """Save a batch of uploaded files (objects with ``.name`` and ``.read``, e.g. Streamlit's
    ``UploadedFile``) into ``folder``. Refuses the whole batch when it has more than
    ``limits.max_files`` files; stops (and reports the rest as skipped) past ``max_total_bytes``."""
    files = list(files)
    if len(files) > limits.max_files:
        raise SafetyError(f"{len(files):,} files in one upload; the limit is {limits.max_files:,}. "
                          "For big image sets use a server-side folder instead.")
    report = UploadReport(str(folder))
    total = 0
    for f in files:
        name = str(getattr(f, "name", "") or "")
        declared = getattr(f, "size", None)
        if declared is not None and total + int(declared) > limits.max_total_bytes:
            report.skipped.append(SavedFile(name, None, None, int(declared), "skipped",
                                            f"over the total upload limit of {_fmt_bytes(limits.max_total_bytes)}"))
            continue
        saved = save_upload(f, folder, name, max_bytes=limits.max_file_bytes)
        (report.saved if saved.status == "saved" else report.skipped).append(saved)
        total += saved.size if saved.status == "saved" else 0
    return report


def write_upload_manifest(run_dir: str | os.PathLike, report: UploadReport) -> Path:
    """Record what an upload brought in the run's ``uploads.json``: each saved file's stored path
    (relative to the report's folder, i.e. to the run's ``uploads/``) with the user's own name
    (``Run.image_names`` shows and exports that name), and each skipped file with its reason."""

    data = report.to_dict()
    for f in data["saved"]:
        if f.get("path"):
            f["path"] = Path(os.path.relpath(f["path"], report.folder)).as_posix()
    target = layout.uploads_manifest(run_dir)
    atomic_write_json(target, data)
    return target


# ------------------------------------------------------------------------------------ zip archives
def _check_member_name(raw: str) -> list[str] | None:
    """Path components of an archive member, None for entries to skip silently (folders, macOS
    metadata, hidden files). Raises SafetyError for absolute paths, drive letters and ``..``."""
    name = raw.replace("\\", "/")
    if "\x00" in name:
        raise SafetyError(f"archive entry {raw!r} has a NUL byte in its name; the archive was refused")
    if name.startswith("/") or _DRIVE.match(name):
        raise SafetyError(f"archive entry {raw!r} has an absolute path; the archive was refused")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise SafetyError(f"archive entry {raw!r} points outside the archive folder ('..'); the archive was refused")
    if name.endswith("/") or not parts:
        return None
    if parts[0] == "__MACOSX" or any(p.startswith(".") for p in parts):
        return None
    return parts


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    mode = (info.external_attr >> 16) & 0xFFFF
    return info.create_system == 3 and stat.S_ISLNK(mode)


def _is_special(info: zipfile.ZipInfo) -> bool:
    mode = (info.external_attr >> 16) & 0xFFFF
    return info.create_system == 3 and stat.S_IFMT(mode) != 0 and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def declared_entry_count(fp: BinaryIO) -> int | None:
    """Number of entries the archive's end-of-central-directory record announces (zip64 aware),
    read from the last 64 KiB without parsing the directory; None when not found."""
    try:
        fp.seek(0, os.SEEK_END)
        size = fp.tell()
        fp.seek(max(0, size - (1 << 16) - 22))
        tail = fp.read()
    except OSError:
        return None
    pos = tail.rfind(b"PK\x05\x06")
    if pos < 0 or len(tail) < pos + 22:
        return None
    count = struct.unpack("<H", tail[pos + 10:pos + 12])[0]
    if count == 0xFFFF:
        loc = tail.rfind(b"PK\x06\x07", 0, pos)
        if loc >= 0 and len(tail) >= loc + 20:
            off = struct.unpack("<Q", tail[loc + 8:loc + 16])[0]
            try:
                fp.seek(off)
                rec = fp.read(56)
            except OSError:
                return None
            if rec[:4] == b"PK\x06\x06" and len(rec) >= 40:
                count = struct.unpack("<Q", rec[32:40])[0]
    return int(count)


def check_zip(zf: zipfile.ZipFile, limits: UploadLimits = DEFAULT_LIMITS) -> list[tuple[zipfile.ZipInfo, list[str]]]:
    """Vet a whole archive before anything is written; the (entry, path parts) pairs to extract.

    Raises SafetyError naming the first problem: too many entries, too many uncompressed bytes,
    a suspicious compression ratio, an absolute / escaping path, a symbolic link, an encrypted or
    special entry.
    """
    infos = zf.infolist()
    if len(infos) > limits.max_files:
        raise SafetyError(f"the archive has {len(infos):,} entries; the limit is {limits.max_files:,}. "
                          "For big image sets use a server-side folder instead.")
    total = 0
    out = []
    for info in infos:
        parts = _check_member_name(info.filename)
        if _is_symlink(info):
            raise SafetyError(f"archive entry {info.filename!r} is a symbolic link; the archive was refused")
        if parts is None:
            continue
        if _is_special(info):
            raise SafetyError(f"archive entry {info.filename!r} is not a regular file; the archive was refused")
        if info.flag_bits & 0x1:
            raise SafetyError(f"archive entry {info.filename!r} is encrypted; upload an unencrypted zip")
        if info.file_size > limits.max_file_bytes:
            raise SafetyError(f"archive entry {info.filename!r} unpacks to {_fmt_bytes(info.file_size)}, over the "
                              f"per-file limit of {_fmt_bytes(limits.max_file_bytes)}")
        if info.file_size > limits.ratio_min_bytes:
            ratio = info.file_size / max(info.compress_size, 1)
            if ratio > limits.max_ratio:
                raise SafetyError(f"archive entry {info.filename!r} is compressed {ratio:,.0f}:1 (limit "
                                  f"{limits.max_ratio:,.0f}:1); this looks like a zip bomb, the archive was refused")
        total += info.file_size
        if total > limits.max_total_bytes:
            raise SafetyError(f"the archive unpacks to more than {_fmt_bytes(limits.max_total_bytes)} "
                              "(the limit); the archive was refused")
        out.append((info, parts))
    return out


def extract_zip(archive: str | os.PathLike | BinaryIO, dest: str | os.PathLike, *,
                limits: UploadLimits = DEFAULT_LIMITS) -> UploadReport:
    """Safely unpack ``archive`` (a path or a binary file object) into the folder ``dest``.

    ``dest`` must not exist yet or be empty. The archive is vetted as a whole first
    (:func:`check_zip`), then entries are streamed with their decompressed bytes counted, into a
    temporary sibling folder that is renamed to ``dest`` only when everything succeeded; on any
    refusal nothing is left behind. Sub-folders are kept, every path component is sanitised with
    :func:`safe_filename`. Raises SafetyError (refused) or SafetyError wrapping a corrupt archive.
    """
    dest = Path(dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise SafetyError(f"{dest}: destination folder is not empty")
    opened = None
    try:
        if isinstance(archive, (str, os.PathLike)):
            opened = open(archive, "rb")
            fp = opened
        else:
            fp = archive
        announced = declared_entry_count(fp)
        if announced is not None and announced > limits.max_files:
            raise SafetyError(f"the archive has {announced:,} entries; the limit is {limits.max_files:,}. "
                              "For big image sets use a server-side folder instead.")
        fp.seek(0)
        try:
            zf = zipfile.ZipFile(fp)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
            raise SafetyError(f"not a readable zip archive ({exc})") from None
        with zf:
            entries = check_zip(zf, limits)
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.extract-", dir=dest.parent))
            try:
                report = _extract_entries(zf, entries, tmp, limits)
                kept = {id(info) for info, _ in entries}
                report.ignored = [info.filename for info in zf.infolist() if id(info) not in kept]
                if dest.exists():
                    dest.rmdir()  # empty (checked above)
                os.replace(tmp, dest)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
    finally:
        if opened is not None:
            opened.close()
    report.folder = str(dest)
    for f in report.saved:
        f.path = str(dest / Path(f.path).relative_to(tmp))
    return report


def _extract_entries(zf: zipfile.ZipFile, entries, tmp: Path, limits: UploadLimits) -> UploadReport:
    report = UploadReport(str(tmp))
    total = 0
    for info, parts in entries:
        folder = tmp
        for comp in parts[:-1]:
            folder = folder / safe_filename(comp, "folder")
        folder.mkdir(parents=True, exist_ok=True)
        if not folder.resolve().is_relative_to(tmp.resolve()):  # defence in depth
            raise SafetyError(f"archive entry {info.filename!r} would leave the destination; refused")
        target = unique_path(folder, safe_filename(parts[-1]))
        written = 0
        try:
            with zf.open(info) as src, _open_new(target) as out:
                while True:
                    chunk = src.read(_CHUNK)
                    if not chunk:
                        break
                    written += len(chunk)
                    total += len(chunk)
                    if written > max(info.file_size, 0) or written > limits.max_file_bytes:
                        raise SafetyError(f"archive entry {info.filename!r} unpacks to more bytes than its header "
                                          "declares; the archive was refused")
                    if total > limits.max_total_bytes:
                        raise SafetyError(f"the archive unpacks to more than {_fmt_bytes(limits.max_total_bytes)}; "
                                          "the archive was refused")
                    out.write(chunk)
        except SafetyError:
            raise
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError, RuntimeError) as exc:
            target.unlink(missing_ok=True)
            report.skipped.append(SavedFile(info.filename, None, None, 0, "skipped", f"could not be unpacked ({exc})"))
            continue
        if written == 0:
            target.unlink(missing_ok=True)
            report.skipped.append(SavedFile(info.filename, None, None, 0, "skipped", "empty file (0 bytes)"))
            continue
        report.saved.append(SavedFile(info.filename, target.name, str(target), written, "saved"))
    return report


# ------------------------------------------------------------------------------------ is anything usable?
@dataclass(frozen=True)
class SourceCount:
    """What a chosen source holds, counted by file name before anything is staged (the scan decides
    for real): the image files it would bring, and why none can be used (None when some can)."""

    n_images: int
    problem: str | None = None


_EXAMPLES = 5


def _listing(items: list[str], reason: str | None = None) -> str:
    shown = [f"{x}: {reason}" if reason else x for x in items[:_EXAMPLES]]
    more = f"; and {len(items) - _EXAMPLES:,} more" if len(items) > _EXAMPLES else ""
    return "; ".join(shown) + more


def _image_extensions() -> frozenset[str]:
    return IMAGE_EXTENSIONS


def _is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in _image_extensions()


def _nothing_in(name: str, folders: list[str], hidden: list[str]) -> str:
    """Why an archive with no regular file (only ``folders`` / ``hidden`` entries) gives nothing."""
    if hidden:
        return (f"{name} holds no image: only hidden files or macOS metadata, which are ignored "
                f"({_listing(hidden)})")
    if folders:
        return f"{name} holds only folders ({len(folders):,}, e.g. {_listing(folders)}): it holds no files"
    return f"{name} is empty: it holds no files"


def count_names(names: Iterable[str], what: str = "the selected files") -> SourceCount:
    """Image files among uploaded file ``names`` (by extension), and why none can be used."""
    names = [str(n) for n in names]
    images = sum(1 for n in names if _is_image_name(n))
    if images or not names:
        return SourceCount(images)
    return SourceCount(0, f"none of {what} is an image ({_listing(names, 'not an image file type')})")


def count_zip(fileobj: BinaryIO, name: str) -> SourceCount:
    """Image files a zip archive would bring (``name``: the user's file name, for messages), read
    from its directory alone; the problem says what is wrong when it brings none (empty, only
    folders, only hidden files, no image file, unreadable, or an entry that would be refused)."""
    try:
        fileobj.seek(0)
        with zipfile.ZipFile(fileobj) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
        return SourceCount(0, f"{name} is not a readable zip archive ({exc})")
    finally:
        try:
            fileobj.seek(0)
        except (OSError, ValueError):
            pass
    folders, hidden, files = [], [], []
    for info in infos:
        try:
            parts = _check_member_name(info.filename)
        except SafetyError as exc:
            return SourceCount(0, f"{name}: {exc}")
        if parts is not None:
            files.append(info.filename)
        elif info.filename.replace("\\", "/").endswith("/"):
            folders.append(info.filename)
        else:
            hidden.append(info.filename)
    if not files:
        return SourceCount(0, _nothing_in(name, folders, hidden))
    return count_names(files, f"the {len(files):,} file(s) in {name}")


def count_folder(folder: str | os.PathLike, limit: int = 200_000) -> SourceCount:
    """Image files under ``folder`` (by extension, hidden ones left out; counting stops at ``limit``)."""
    n = 0
    for _, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        n += sum(1 for f in names if not f.startswith(".") and _is_image_name(f))
        if n >= limit:
            break
    return SourceCount(n, None if n else f"{folder} holds no image file (looked for "
                                          f"{', '.join(sorted(_image_extensions()))})")


def nothing_usable(report: UploadReport, name: str) -> str | None:
    """Why an upload or an archive (``name``: the user's name for it) brought no usable file, naming
    each file and its problem; None when at least one file was saved."""
    if report.n_saved:
        return None
    if report.skipped:
        return (f"{name}: none of its {len(report.skipped):,} file(s) could be used "
                f"({_listing([f'{f.display_name}: {f.reason}' for f in report.skipped])})")
    folders = [e for e in report.ignored if e.replace("\\", "/").endswith("/")]
    return _nothing_in(name, folders, [e for e in report.ignored if e not in folders])


# ------------------------------------------------------------------------------------ server folders
def default_data_roots(runs_root: str | os.PathLike | None = None) -> list[Path]:
    """The folders a typed server path may point into.

    ``$CLUSTERMINE_DATA_ROOTS`` (``os.pathsep``-separated) when set; otherwise ``../shared/data``
    (when it exists) plus the ``uploads/`` folder of every run under ``runs_root`` (so images
    uploaded for one run can be reused by the next). Only existing folders are returned, fully
    resolved; symbolic links among the run folders are not followed.
    """
    env = os.environ.get("CLUSTERMINE_DATA_ROOTS")
    if env is not None and env.strip():
        raw = [p for p in env.split(os.pathsep) if p.strip()]
    else:
        raw = [str(Path("..") / "shared" / "data")]
        if runs_root is not None and Path(runs_root).is_dir():
            for run in sorted(Path(runs_root).iterdir()):
                up = layout.uploads_dir(run)
                if not run.is_symlink() and run.is_dir() and not up.is_symlink() and up.is_dir():
                    raw.append(str(up))
    roots: list[Path] = []
    for r in raw:
        p = Path(r).expanduser()
        if p.is_dir():
            rp = p.resolve()
            if rp not in roots:
                roots.append(rp)
    return roots


def _has_dotdot(text: str) -> bool:
    return any(part == ".." for part in re.split(r"[\\/]", text))


def resolve_in_roots(user_path: str, roots: Iterable[str | os.PathLike], *, must_be_dir: bool = True) -> Path:
    """Resolve a typed path to a folder (or file) inside one of ``roots``.

    A relative path is looked up under each root in order; an absolute one must lie inside a root.
    Refused with SafetyError: empty paths, NUL bytes, any ``..`` component, a path outside every root,
    and any symbolic link between the root and the target (the target included). A path that does
    not exist raises SafetyError too ("not found").
    """
    text = str(user_path or "").strip()
    if not text:
        raise SafetyError("enter a folder path")
    if "\x00" in text:
        raise SafetyError("the path contains a NUL byte")
    if _has_dotdot(text):
        raise SafetyError(f"{text}: '..' is not allowed in folder paths")
    root_list = [Path(r) for r in roots]
    if not root_list:
        raise SafetyError("no data folders are configured on this server (set CLUSTERMINE_DATA_ROOTS)")
    pairs = []  # (lexical root, resolved root)
    for r in root_list:
        lex = Path(os.path.abspath(r))
        try:
            pairs.append((lex, lex.resolve(strict=True)))
        except (OSError, RuntimeError):
            continue
    candidates: list[tuple[Path, Path]] = []  # (resolved root, relative part)
    given = Path(text).expanduser() if text.startswith("~") else Path(text)
    if given.is_absolute():
        norm = Path(os.path.normpath(given))
        for lex, real in pairs:
            for base in (lex, real):
                if norm == base or norm.is_relative_to(base):
                    candidates.append((real, norm.relative_to(base)))
                    break
        if not candidates:
            raise SafetyError(f"{text}: outside the allowed data folders ({', '.join(str(p[1]) for p in pairs)})")
    else:
        candidates = [(real, Path(os.path.normpath(given))) for _, real in pairs]
    for real_root, rel in candidates:
        target = real_root / rel if str(rel) != "." else real_root
        if not os.path.lexists(target):
            continue
        cur = real_root
        for comp in ([] if str(rel) == "." else rel.parts):
            cur = cur / comp
            if cur.is_symlink():
                raise SafetyError(f"{text}: passes through a symbolic link ({cur}); links are not followed")
        resolved = target.resolve(strict=True)
        if not (resolved == real_root or resolved.is_relative_to(real_root)):
            raise SafetyError(f"{text}: resolves outside the allowed data folders")
        if must_be_dir and not resolved.is_dir():
            raise SafetyError(f"{text}: not a folder")
        return resolved
    raise SafetyError(f"{text}: not found in the allowed data folders ({', '.join(str(p[1]) for p in pairs)})")


def list_subfolders(roots: Iterable[str | os.PathLike], depth: int = 2, limit: int = 200) -> list[str]:
    """Folders under the roots (up to ``depth`` levels, no hidden folders, no symbolic links), as
    absolute paths, to offer as choices in the UI."""
    out: list[str] = []
    for root in roots:
        stack = [(Path(root), 0)]
        while stack and len(out) < limit:
            folder, level = stack.pop(0)
            out.append(str(folder))
            if level >= depth:
                continue
            try:
                subs = sorted(e.path for e in os.scandir(folder)
                              if e.is_dir(follow_symlinks=False) and not e.name.startswith("."))
            except OSError:
                continue
            stack.extend((Path(s), level + 1) for s in subs)
    return out[:limit]


# ------------------------------------------------------------------------------------ helpers
def new_run_id(name: str | None = None) -> str:
    """A run id usable as a folder name and in a URL: ``name`` slugified (``My run 2`` ->
    ``my-run-2``), or ``run-<8 hex>`` when nothing usable is left."""
    base = unicodedata.normalize("NFKD", str(name or "")).encode("ascii", "ignore").decode("ascii")
    base = re.sub(r"[^A-Za-z0-9]+", "-", base).strip("-").lower()[:60].strip("-")
    return base or f"run-{uuid.uuid4().hex[:8]}"


RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def check_run_id(run_id: str) -> str:
    """Validate a run id taken from a URL: one folder name, no separators, no ``..``."""
    rid = str(run_id or "")
    if not RUN_ID_RE.match(rid) or ".." in rid:
        raise SafetyError(f"{rid!r} is not a valid run id (letters, digits, '.', '_' and '-' only)")
    return rid


def _fmt_bytes(n: int) -> str:
    for unit, size in (("GiB", GiB), ("MiB", MiB), ("KiB", 1024)):
        if n >= size:
            return f"{n / size:,.1f} {unit}"
    return f"{n} bytes"
