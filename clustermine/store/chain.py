"""Hash-chained JSONL decision logs: every entry carries the SHA-256 of the entry before it.

The concept edit log (``edits.jsonl``) and the exclusion log (``exclusions.jsonl``) are append-only
audit logs. Each new entry is one line of canonical JSON (keys sorted, no spaces, UTF-8) with a
``prev`` field:

- the first entry of a log: ``prev`` = :func:`genesis` = SHA-256 of
  ``"clustermine-decision-log-v1\\n<log file name>\\n<run id>"`` (hex), so a log copied from another run,
  or from the other log, does not verify;
- every later entry: ``prev`` = SHA-256 (hex) of the previous line's exact bytes, without its newline;
- an *upgrade*: a log whose first entries were written before the chain existed ("unchained", no
  ``prev``) continues with a first chained entry whose ``prev`` is the SHA-256 of all those unchained
  lines as they are on disk (joined by ``\\n``). They are then sealed: changing one shows at that entry,
  though who wrote them stays unverified. The state says "partly chained: the first M entries unchained".

A chain alone cannot see the *last* entries removed or changed, so every append also writes a small
head record beside the log (``<log>.head.json``: entry count and the last line's hash); verification
compares it with the log's end (an append that finds the end already disagreeing carries that
finding forward in the new head, so a later decision does not hide it). The head is written in two phases (first naming the old end and the
coming one as ``next``, then the log, then the settled head), so a crash between the files leaves a
state that verifies. The head is as editable as the log; it raises the bar (a rewrite must
be consistent in both files) and its hash, printed by ``clustermine verify --json``, can be kept
elsewhere. Entry numbers are 1-based line numbers.

Appends happen under the caller's file lock; the file is rewritten atomically (temp file + fsync +
rename, :mod:`clustermine.core.storage`) with the old lines' bytes unchanged, so a crash leaves the
old log or the new one.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from clustermine.core.identity import Actor, cli_actor
from clustermine.core.storage import atomic_write_bytes, atomic_write_json

GENESIS_TAG = "clustermine-decision-log-v1"
#: The log states: no entries; every entry chained and linked; chained after an unchained start;
#: written before the chain (nothing to verify); a broken link / bad line / head mismatch.
LOG_KINDS = ("empty", "intact", "partial", "unchained", "altered")


def genesis(log_name: str, run_id: str) -> str:
    """The ``prev`` of a log's first entry: SHA-256 hex of the tag, the log's file name and the run id."""
    return hashlib.sha256(f"{GENESIS_TAG}\n{log_name}\n{run_id}".encode("utf-8")).hexdigest()


def line_hash(line: bytes) -> str:
    """SHA-256 hex of one log line's exact bytes (without the newline)."""
    return hashlib.sha256(line).hexdigest()


def canonical(entry: dict) -> bytes:
    """The one serialisation of an entry: JSON with sorted keys, no spaces, UTF-8 (stable across machines)."""
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def head_path(path: str | os.PathLike) -> Path:
    """The head record beside a log: ``edits.jsonl`` -> ``edits.head.json``."""
    p = Path(path)
    return p.with_name(p.stem + ".head.json")


def read_lines(path: str | os.PathLike) -> list[bytes]:
    """The log's lines as bytes, without newlines ([] when the file is absent or empty)."""
    p = Path(path)
    if not p.is_file():
        return []
    data = p.read_bytes()
    if not data:
        return []
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    return lines


def _parse(line: bytes) -> dict | None:
    try:
        obj = json.loads(line.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None
    return obj if isinstance(obj, dict) else None


def _link(lines: list[bytes], i: int, first_chained: int, start: str) -> str:
    """The ``prev`` that entry ``i`` (0-based) must carry, given the entries before it."""
    if i == 0:
        return start
    if i - 1 >= first_chained:
        return line_hash(lines[i - 1])
    return line_hash(b"\n".join(lines[:i]))  # the first chained entry after an unchained start


def append_entries(path: str | os.PathLike, entries: list[dict], *, start: str) -> list[dict]:
    """Append ``entries`` (dicts without ``prev``) to the log at ``path``, each chained to the one
    before; ``start`` is the log's :func:`genesis`. The caller holds the log's lock. Returns the
    entries as written (with ``prev``). The old lines keep their exact bytes; the file and then its
    head record are replaced atomically."""
    path = Path(path)
    lines = read_lines(path)
    parsed = [_parse(x) for x in lines]
    chained = [i for i, e in enumerate(parsed) if e is not None and "prev" in e]
    first_chained = chained[0] if chained else len(lines)
    before = _head_of(lines)
    old_head = _read_head(path, len(lines))
    if old_head is not None and not old_head.get("bad") and lines:
        # A tail removed or changed by hand is seen only against the head record; the new head would
        # hide it, so it carries the finding forward (verify keeps reporting it).
        found = _tail_problem(lines, old_head)
        if isinstance(old_head.get("altered"), dict):
            before["altered"] = old_head["altered"]
        elif found is not None:
            before["altered"] = {"entry": found[0], "problem": found[1]}
    written = []
    for entry in entries:
        i = len(lines)
        full = dict(entry, prev=_link(lines, i, first_chained, start))
        first_chained = min(first_chained, i)
        lines.append(canonical(full))
        written.append(full)
    if not written:
        return written
    after = _head_of(lines)
    if "altered" in before:
        after["altered"] = before["altered"]
    # Two phases, so that a crash between the two files never looks like tampering: the head first
    # names both the old end and the coming one, then the log is replaced, then the head settles.
    atomic_write_json(head_path(path), dict(before, next=after))
    atomic_write_bytes(path, b"".join(x + b"\n" for x in lines))
    atomic_write_json(head_path(path), after)
    return written


def _head_of(lines: list[bytes]) -> dict:
    return {"count": len(lines), "sha256": line_hash(lines[-1]) if lines else None}


@dataclass(frozen=True)
class LogState:
    """What :func:`verify_log` found. ``kind``: one of :data:`LOG_KINDS`; ``count``: entries (lines);
    ``unchained``: leading entries without ``prev``; ``bad_entry``: 1-based number of the first bad
    entry (altered only); ``problem``: what is wrong with it; ``head``: the last line's SHA-256."""

    log: str
    kind: str
    count: int
    unchained: int = 0
    bad_entry: int | None = None
    problem: str | None = None
    head: str | None = None

    @property
    def ok(self) -> bool:
        """False only when the log was altered (an unchained log is not an error: nothing to check)."""
        return self.kind != "altered"

    def entry_state(self, number: int) -> str:
        """The state of entry ``number`` (1-based): ``verified``, ``unchained`` or ``not verified``
        (at or after the first bad entry)."""
        if self.kind == "altered" and self.bad_entry is not None and number >= self.bad_entry:
            return "not verified"
        if number <= self.unchained:
            return "unchained"
        return "verified"

    def message(self) -> str:
        """One line for people: ``verified: 5 entries`` / ``altered at entry 3: ...``."""
        if self.kind == "empty":
            return "no entries"
        if self.kind == "altered":
            return f"the log was altered at entry {self.bad_entry}: {self.problem}"
        if self.kind == "unchained":
            return (f"unchained: {self.count} entries written before ClusterMine chained its logs "
                    "(they cannot be verified)")
        if self.kind == "partial":
            return (f"verified: {self.count} entries (the first {self.unchained} written before the chain "
                    "are unchained, sealed since)")
        return f"verified: {self.count} entries"

    def to_dict(self) -> dict:
        return dict(asdict(self), ok=self.ok, message=self.message())


def _valid_head(head: object) -> bool:
    return (isinstance(head, dict) and isinstance(head.get("count"), int) and head["count"] >= 0
            and (isinstance(head.get("sha256"), str) or (head["count"] == 0 and head.get("sha256") is None)))


def _read_head(path: Path, n: int) -> dict | None:
    """The head record that applies to a log of ``n`` lines: the settled one, or during an append
    (``next`` present) the coming end once the log reached it. None when there is none; ``{"bad":
    True}`` when it is unreadable."""
    hp = head_path(path)
    if not hp.is_file():
        return None
    try:
        head = json.loads(hp.read_text(encoding="utf-8"))
    except (ValueError, OSError, UnicodeDecodeError):
        return {"bad": True}
    if not _valid_head(head):
        return {"bad": True}
    nxt = head.get("next")
    if nxt is not None:
        if not _valid_head(nxt):
            return {"bad": True}
        if n >= nxt["count"]:
            return nxt
    return head


def _diagnose(lines: list[bytes], parsed: list[dict], i: int, first_chained: int, expected: str) -> tuple[int, str]:
    """(first bad entry, why) for a broken link at line ``i`` (0-based): inserted lines (a later
    entry links to the last good one, or this one links further back), removed lines (``seq``
    jumps), else a changed entry."""
    earlier = {line_hash(lines[j]): j for j in range(first_chained, i - 1)}
    j = earlier.get(parsed[i].get("prev"))
    if j is not None:  # entry i+1 links to entry j+1: those between were inserted (they may link among themselves)
        n = i - j - 1
        what = "was inserted" if n == 1 else f"and the {n - 1} after it were inserted"
        return j + 2, f"entry {j + 2} {what} (entry {i + 1} links to entry {j + 1})"
    for q in range(i + 1, len(lines)):
        e = parsed[q]
        if e is not None and e.get("prev") == expected:
            n = q - i
            what = "was inserted" if n == 1 else f"and the {n - 1} after it were inserted"
            to = f"entry {i}" if i else "the log's start"
            return i + 1, f"entry {i + 1} {what} (entry {q + 1} links to {to})"
    seq = parsed[i].get("seq")
    if isinstance(seq, int) and not isinstance(seq, bool) and seq > i + 1:
        n = seq - (i + 1)
        gone = f"entry {i + 1} was removed" if n == 1 else f"{n} entries were removed from entry {i + 1} on"
        return i + 1, f"{gone} (the entry now at {i + 1} is numbered {seq})"
    if i == 0:
        return 1, "entry 1 does not start this run's log (it was changed, or comes from another log)"
    if i - 1 < first_chained:
        return i, f"one of entries 1–{i} (written before the chain) was changed (entry {i + 1} sealed them)"
    return i, f"entry {i} was changed (its hash differs from the one entry {i + 1} recorded)"


def _tail_problem(lines: list[bytes], head: dict) -> tuple[int, str] | None:
    """(first bad entry, why) when the log's end disagrees with its (valid) head record, including
    an alteration an earlier append found and carried forward (``altered``); else None."""
    if isinstance(head.get("altered"), dict):
        a = head["altered"]
        entry = a.get("entry") if isinstance(a.get("entry"), int) and a["entry"] >= 1 else 1
        return entry, f"{a.get('problem')} (found when a later entry was appended)"
    n, count = len(lines), head["count"]
    if count > n:
        k = count - n
        gone = f"entry {n + 1} was removed" if k == 1 else f"entries {n + 1}–{count} were removed"
        return n + 1, f"{gone} (the head record counts {count} entries, the log holds {n})"
    if count >= 1 and line_hash(lines[count - 1]) != head["sha256"]:
        return count, f"entry {count} was changed (its hash differs from the head record's)"
    if count < n:
        return count + 1, f"entry {count + 1} was appended outside ClusterMine (the head record counts {count} entries)"
    return None


def verify_log(path: str | os.PathLike, *, start: str) -> LogState:
    """Check the log at ``path`` against its chain (``start`` = its :func:`genesis`) and its head record.

    Finds the first problem in file order: a line that is not a JSON object; a chained entry after
    which an entry has no ``prev``; a ``prev`` that does not link (told apart as inserted, removed or
    changed, see :func:`_diagnose`); the head record disagreeing with the log's end (last entries
    removed, the last entry changed, entries appended by hand)."""
    path = Path(path)
    name = path.name
    lines = read_lines(path)
    if not lines:
        head = _read_head(path, 0)
        if head is not None and not head.get("bad") and head["count"] > 0:
            return LogState(name, "altered", 0, 0, 1, f"all {head['count']} entries were removed (the log is "
                                                       "empty or missing, its head record remains)")
        return LogState(name, "empty", 0)
    parsed = [_parse(x) for x in lines]
    chained = [i for i, e in enumerate(parsed) if e is not None and "prev" in e]
    first_chained = chained[0] if chained else len(lines)
    n = len(lines)

    def altered(entry: int, why: str) -> LogState:
        return LogState(name, "altered", n, min(first_chained, n), entry, why, line_hash(lines[-1]))

    for i in range(n):
        if parsed[i] is None:
            return altered(i + 1, f"entry {i + 1} is not a JSON object (a torn or hand-edited line)")
    for i in range(first_chained, n):
        if "prev" not in parsed[i]:
            return altered(i + 1, f"entry {i + 1} carries no chain hash (written by hand or by an older "
                                  "ClusterMine)")
        expected = _link(lines, i, first_chained, start)
        if parsed[i]["prev"] != expected:
            return altered(*_diagnose(lines, parsed, i, first_chained, expected))
    head = _read_head(path, n)
    if not chained:
        if head is not None and not head.get("bad") and head["count"] > 0:
            return altered(1, "no entry carries a chain hash, but the head record shows this log was chained "
                              "(the hashes were removed)")
        return LogState(name, "unchained", n, n, head=line_hash(lines[-1]))
    if head is not None:
        if head.get("bad"):
            return altered(n, f"the head record {head_path(path).name} is unreadable")
        found = _tail_problem(lines, head)
        if found is not None:
            return altered(*found)
    kind = "partial" if first_chained > 0 else "intact"
    return LogState(name, kind, n, first_chained, head=line_hash(lines[-1]))


def entry_actor(actor: Actor | None, user: str | None = None) -> Actor:
    """Who signs an entry: ``actor`` when given; else the older ``user=`` name of library callers and
    scripts, recorded like the CLI (:func:`~clustermine.core.identity.cli_actor`, ``auth = "os"``:
    the process runs under an OS account, which is what vouches for it), the OS user when empty."""
    return actor if actor is not None else cli_actor(user)
