"""Image discovery and safe decoding.

``scan_images`` lists the candidate images under a folder (deterministically, never following
symbolic links) and says why any file is skipped; ``load_rgb`` decodes one file to an upright
8-bit RGB ``PIL.Image`` and turns every decoding problem into :class:`~clustermine.core.errors.ImageError`.

The decompression-bomb guard is explicit: the header is parsed first, and an image whose
width x height exceeds ``max_pixels`` is refused before any pixel data is decoded. PIL's own
process-wide ``Image.MAX_IMAGE_PIXELS`` is neither read nor changed here.
"""

from __future__ import annotations

import os
import stat
import struct
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from clustermine.core.errors import ImageError, NoImagesError
from clustermine.core.hashing import file_hash

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
)
"""Lower-case file extensions treated as images (matched case-insensitively)."""

SIDECAR_EXTENSIONS: frozenset[str] = frozenset({".csv", ".txt", ".json"})
"""Extensions of files that commonly sit beside images (labels, notes); silently ignored."""

DEFAULT_MAX_PIXELS: int = 89_478_485
"""Default decompression-bomb limit in pixels (PIL's own default, ~ 9459 x 9459)."""

SKIP_SYMLINK = "symbolic link (not followed)"
SKIP_EXTENSION = "not an image file extension"
SKIP_EMPTY = "empty file (0 bytes)"
SKIP_NOT_REGULAR = "not a regular file"


@dataclass
class ImageRecord:
    """One file found by :func:`scan_images`.

    ``path`` is the POSIX path relative to the scanned root; ``sha1`` is the hex digest of the
    file bytes (None when the file was not read); ``status`` is ``"ok"`` or ``"skipped"`` with a
    human ``reason``; ``duplicate_of`` names the first file (relative path) with identical bytes.
    """

    path: str
    abs_path: str
    size_bytes: int
    sha1: str | None
    status: str
    reason: str | None = None
    duplicate_of: str | None = None

    @property
    def ok(self) -> bool:
        """True when the file is a usable candidate (status ``"ok"``)."""
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (field name -> value)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImageRecord:
        """Inverse of :meth:`to_dict`; unknown keys are ignored."""
        return cls(
            path=str(data["path"]),
            abs_path=str(data["abs_path"]),
            size_bytes=int(data["size_bytes"]),
            sha1=data.get("sha1"),
            status=str(data["status"]),
            reason=data.get("reason"),
            duplicate_of=data.get("duplicate_of"),
        )


# --------------------------------------------------------------------------------------------
# Folder scan
# --------------------------------------------------------------------------------------------


def _is_ignored(name: str) -> bool:
    """Hidden files and sidecars (labels.csv, notes.txt, meta.json) are ignored silently."""
    return name.startswith(".") or os.path.splitext(name)[1].lower() in SIDECAR_EXTENSIONS


def _is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _walk(root: Path) -> list[tuple[str, os.DirEntry[str]]]:
    """All entries below ``root`` as (relative POSIX path, entry); symlinked dirs not entered."""
    found: list[tuple[str, os.DirEntry[str]]] = []
    stack: list[tuple[Path, str]] = [(root, "")]
    while stack:
        folder, prefix = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError:
            continue  # an unreadable sub-folder holds nothing we can use
        for entry in entries:
            rel = f"{prefix}{entry.name}"
            if entry.is_dir(follow_symlinks=False):
                if not entry.name.startswith("."):
                    stack.append((Path(entry.path), rel + "/"))
            else:  # files, symbolic links (to files or folders) and special files
                found.append((rel, entry))
    return found


def hash_or_reason(path: str) -> tuple[str | None, str | None]:
    """(sha1 hex digest of the file's bytes, None), or (None, why it cannot be read)."""
    try:
        return file_hash(path, "sha1"), None
    except OSError as exc:
        return None, f"cannot read file ({exc.strerror or exc})"


def _record_for(rel: str, entry: os.DirEntry[str], max_file_bytes: int | None,
                hash_now: bool = True) -> ImageRecord | None:
    """The record of one directory entry, or None when the entry is silently ignored. With
    ``hash_now`` False a candidate is returned "ok" with ``sha1`` None, to be hashed by the caller."""
    name = entry.name
    if _is_ignored(name):
        return None
    abs_path = os.path.abspath(entry.path)

    def skipped(reason: str, size: int = 0) -> ImageRecord:
        return ImageRecord(rel, abs_path, size, None, "skipped", reason)

    if entry.is_symlink():
        return skipped(SKIP_SYMLINK)
    if not _is_image_name(name):
        return skipped(SKIP_EXTENSION, _lsize(entry))
    try:
        st = entry.stat(follow_symlinks=False)
    except OSError as exc:
        return skipped(f"cannot read file ({exc.strerror or exc})")
    if not stat.S_ISREG(st.st_mode):
        return skipped(SKIP_NOT_REGULAR)
    if st.st_size == 0:
        return skipped(SKIP_EMPTY)
    if max_file_bytes is not None and st.st_size > max_file_bytes:
        return skipped(
            f"file is {st.st_size:,} bytes, over the limit of {max_file_bytes:,} bytes", st.st_size
        )
    if not hash_now:
        return ImageRecord(rel, abs_path, st.st_size, None, "ok")
    sha1, reason = hash_or_reason(entry.path)
    if sha1 is None:
        return skipped(reason, st.st_size)
    return ImageRecord(rel, abs_path, st.st_size, sha1, "ok")


def _lsize(entry: os.DirEntry[str]) -> int:
    try:
        return entry.stat(follow_symlinks=False).st_size
    except OSError:
        return 0


HashFilesFn = Callable[[list[str]], list[tuple[str | None, str | None]]]
"""``hash_files(abs_paths)`` -> one :func:`hash_or_reason` result per path, in order."""

def scan_images(root: str | os.PathLike[str], *, max_file_bytes: int | None = None,
                hash_files: HashFilesFn | None = None) -> list[ImageRecord]:
    """List the image files below ``root`` (recursively), sorted by relative path.

    Never follows symbolic links (they are recorded as skipped), skips empty / oversized /
    unreadable files and files without an image extension (with a reason), ignores hidden files,
    hidden folders and sidecars (``*.csv``, ``*.txt``, ``*.json``), and marks files whose bytes
    equal an earlier file's with ``duplicate_of`` (they stay ``"ok"``). Nothing is decoded.

    ``hash_files``: reads and hashes the candidates' bytes elsewhere (e.g. on a Ray cluster,
    :meth:`clustermine.workflows.distributed.RayCluster.hash_files`); the records are the same as with the
    default in-process hashing.

    Raises NoImagesError when ``root`` is not a folder or holds no usable image file.
    """
    folder = Path(root).expanduser()
    if not folder.exists():
        raise NoImagesError(f"folder not found: {folder}")
    if not folder.is_dir():
        raise NoImagesError(f"not a folder: {folder}")

    records: list[ImageRecord] = []
    for rel, entry in sorted(_walk(folder), key=lambda item: item[0]):
        record = _record_for(rel, entry, max_file_bytes, hash_now=hash_files is None)
        if record is not None:
            records.append(record)
    if hash_files is not None:
        pending = [r for r in records if r.status == "ok" and r.sha1 is None]
        for r, (sha1, reason) in zip(pending, hash_files([r.abs_path for r in pending]), strict=True):
            if sha1 is None:
                r.status, r.reason = "skipped", reason
            else:
                r.sha1 = sha1
    _mark_duplicates(records)
    _require_usable(folder, records)
    return records


def _mark_duplicates(records: list[ImageRecord]) -> None:
    first_by_hash: dict[str, str] = {}
    for rec in records:
        if rec.status != "ok" or rec.sha1 is None:
            continue
        first = first_by_hash.setdefault(rec.sha1, rec.path)
        if first != rec.path:
            rec.duplicate_of = first


def _require_usable(folder: Path, records: list[ImageRecord]) -> None:
    if any(rec.ok for rec in records):
        return
    looked_for = ", ".join(sorted(IMAGE_EXTENSIONS))
    candidates = [rec for rec in records if _is_image_name(rec.path) or rec.reason == SKIP_SYMLINK]
    if not candidates:
        raise NoImagesError(f"no image files found in {folder} (looked for {looked_for})")
    examples = "; ".join(f"{rec.path}: {rec.reason}" for rec in candidates[:3])
    raise NoImagesError(
        f"no usable image files in {folder}: all {len(candidates)} candidate files were "
        f"skipped (e.g. {examples})"
    )


# --------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------

_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
_SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N"}


def _open_unchecked(fp: IO[bytes], filename: str) -> ImageFile.ImageFile:
    """Parse only the header, like ``Image.open`` but without PIL's global bomb check.

    Uses PIL's plugin registry (``Image.ID`` / ``Image.OPEN``) so the size limit can be
    applied explicitly by the caller before any pixel data is decoded.
    """
    prefix = fp.read(16)
    tried: set[str] = set()
    for loader in (Image.preinit, Image.init):
        loader()
        for fmt in [f for f in Image.ID if f not in tried]:
            tried.add(fmt)
            factory, accept = Image.OPEN[fmt]
            try:
                accepted = accept(prefix) if accept is not None else True
                if not accepted or isinstance(accepted, str):
                    continue
                fp.seek(0)
                return factory(fp, filename)
            except (SyntaxError, IndexError, TypeError, struct.error):
                continue
    raise UnidentifiedImageError(f"cannot identify image file {filename!r}")


def _check_pixels(im: Image.Image, max_pixels: int | None) -> None:
    width, height = im.size
    if max_pixels is not None and width * height > max_pixels:
        raise ImageError(
            getattr(im, "filename", "") or "",
            f"image is {width} x {height} = {width * height} pixels, over the limit of "
            f"{max_pixels} pixels (set max_pixels to allow it)",
        )


def _to_uint8(arr: np.ndarray, full_scale: float | None) -> np.ndarray:
    """Scale a numeric array to uint8: by ``full_scale`` when given, else by its own range."""
    arr = arr.astype(np.float64)
    arr = np.nan_to_num(arr, nan=0.0, posinf=0.0, neginf=0.0)
    if full_scale is None:
        lo, hi = float(arr.min(initial=0.0)), float(arr.max(initial=0.0))
        arr = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
    else:
        arr = arr / full_scale
    return np.clip(np.rint(arr * 255.0), 0, 255).astype(np.uint8)


def _high_depth_to_l(im: Image.Image) -> Image.Image:
    """Modes I;16*, I, F -> 8-bit L by scaling (not clipping) the value range."""
    arr = np.asarray(im)
    if im.mode in _SIXTEEN_BIT_MODES:
        return Image.fromarray(_to_uint8(arr, 65535.0), mode="L")
    if im.mode == "F":
        lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
        scale = 1.0 if lo >= 0.0 and hi <= 1.0 else (255.0 if lo >= 0.0 and hi <= 255.0 else None)
        return Image.fromarray(_to_uint8(arr, scale), mode="L")
    lo, hi = int(arr.min(initial=0)), int(arr.max(initial=0))  # mode "I" (int32)
    if lo >= 0 and hi <= 255:
        scale: float | None = 255.0
    elif lo >= 0 and hi <= 65535:
        scale = 65535.0
    else:
        scale = None
    return Image.fromarray(_to_uint8(arr, scale), mode="L")


def _composite_on_white(im: Image.Image) -> Image.Image:
    rgba = im.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def to_rgb(im: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB; transparency is composited on white, 16-bit is scaled."""
    if im.mode == "RGB":
        return im
    if im.mode in _SIXTEEN_BIT_MODES or im.mode in {"I", "F"}:
        return _high_depth_to_l(im).convert("RGB")
    if im.mode in _ALPHA_MODES or "transparency" in im.info:
        return _composite_on_white(im)
    return im.convert("RGB")


def _decode(fp: IO[bytes], path: str, max_pixels: int | None) -> Image.Image:
    with _open_unchecked(fp, path) as im:
        _check_pixels(im, max_pixels)
        im.load()  # a freshly opened file is at its first frame (animations: frame 0)
        frame: Image.Image = im
        try:
            frame = ImageOps.exif_transpose(im) or im
        except Exception:  # a corrupt EXIF block must not lose the picture
            frame = im
        try:
            rgb = to_rgb(frame)
        except ValueError:
            raise ImageError(path, f"unsupported colour mode {frame.mode}") from None
        return rgb.copy() if rgb is im else rgb


def check_pixel_limit(path: str | os.PathLike[str], max_pixels: int | None = DEFAULT_MAX_PIXELS) -> None:
    """Raise ImageError if the image's header declares more than ``max_pixels`` pixels.

    Reads the header only (no pixel data); used for images whose features are already cached, so
    that the pixel limit gives the same skips whether or not a file was encoded before.
    """
    name = os.fspath(path)
    try:
        with open(name, "rb") as fp, _open_unchecked(fp, name) as im:
            _check_pixels(im, max_pixels)
    except ImageError as exc:
        raise ImageError(name, exc.reason) from None
    except Exception as exc:
        raise ImageError(name, _corrupt_reason(exc)) from None


def load_rgb(path: str | os.PathLike[str], *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode one image file to an upright 8-bit RGB image (first frame of animations).

    ``max_pixels`` (None = no limit) is checked against the header before pixel data is decoded.
    Every failure -- missing file, not an image, truncated data, too many pixels -- raises
    ImageError(path, reason); no PIL exception escapes.
    """
    name = os.fspath(path)
    try:
        with open(name, "rb") as fp:
            return _decode(fp, name, max_pixels)
    except ImageError as exc:
        raise ImageError(name, exc.reason) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # PIL's own guard, inside some format readers (the warning only when warnings are errors)
        raise ImageError(name, f"image is too large for PIL's decompression-bomb guard ({exc})") from None
    except FileNotFoundError:
        raise ImageError(name, "file not found") from None
    except IsADirectoryError:
        raise ImageError(name, "is a folder, not a file") from None
    except PermissionError:
        raise ImageError(name, "cannot read file (permission denied)") from None
    except UnidentifiedImageError:
        raise ImageError(name, "not a readable image (cannot identify image file)") from None
    except MemoryError:
        raise ImageError(name, "not enough memory to decode this image") from None
    except Exception as exc:  # OSError (truncated), ValueError, SyntaxError, EOFError, struct.error...
        raise ImageError(name, _corrupt_reason(exc)) from None


def require_decodable(root: str | os.PathLike[str], *, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                      max_reasons: int = 5) -> str:
    """Check before a job starts that ``root`` holds at least one image that decodes.

    Walks ``root`` like :func:`scan_images` (same files ignored or skipped, but nothing is hashed)
    and decodes its image files in path order, stopping at the first success, so the usual cost is
    one decode. Returns the relative path of that image. Raises NoImagesError when ``root`` has no
    image file, or when none decodes: then up to ``max_reasons`` files are named with the reason
    (for example a text file renamed ``.jpg``).
    """
    folder = Path(root).expanduser()
    if not folder.is_dir():
        raise NoImagesError(f"not a folder: {folder}")
    failures: list[tuple[str, str]] = []
    for rel, entry in sorted(_walk(folder), key=lambda item: item[0]):
        if _is_ignored(entry.name) or not _is_image_name(entry.name):
            continue
        if entry.is_symlink():
            failures.append((rel, SKIP_SYMLINK))
            continue
        try:
            load_rgb(entry.path, max_pixels=max_pixels)
            return rel
        except ImageError as exc:
            failures.append((rel, exc.reason))
    if not failures:
        looked_for = ", ".join(sorted(IMAGE_EXTENSIONS))
        raise NoImagesError(f"no image files found in {folder} (looked for {looked_for}), so no run was created")
    shown = "; ".join(f"{path}: {reason}" for path, reason in failures[:max_reasons])
    more = f"; and {len(failures) - max_reasons} more" if len(failures) > max_reasons else ""
    raise NoImagesError(f"none of the {len(failures)} image file(s) could be read, so no run was created "
                        f"({shown}{more})")


def _corrupt_reason(exc: BaseException) -> str:
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if len(detail) > 120:
        detail = detail[:117] + "..."
    return f"truncated or corrupt image data ({detail})"
