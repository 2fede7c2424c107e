"""The hash-chained decision log (issue 20): cost of one append and of `verify` as the log grows.

    .venv/bin/python bench/bench_chain.py [--sizes 100 1000 10000] [--reps 5]

Each size: a log of N entries (the shape of a concept edit: seq, ts, user, auth, role, action,
concept id, text) is built with one ``append_entries`` call, then ``--reps`` single-entry appends
(what one click in the app costs: read, re-link, atomic rewrite, head record) and ``--reps``
``verify_log`` calls are timed; medians printed as a markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from clustermine.store.chain import append_entries, genesis, verify_log


def entry(i: int) -> dict:
    return {"seq": i + 1, "ts": "2026-12-06T08:00:00+00:00", "user": "ada@example.org", "auth": "oidc",
            "issuer": "https://id.example.org", "role": "reviewer", "action": "reject",
            "concept_id": f"c-{i:010x}", "text": f"concept number {i}"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 1_000, 10_000])
    ap.add_argument("--reps", type=int, default=5)
    a = ap.parse_args()
    start = genesis("edits.jsonl", "bench-run")
    print("| entries | log size | one append (median) | verify (median) | state |\n|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for n in a.sizes:
            path = Path(tmp) / f"edits-{n}.jsonl"
            append_entries(path, [entry(i) for i in range(n)], start=start)
            appends, verifies = [], []
            for r in range(a.reps):
                t0 = time.perf_counter()
                append_entries(path, [entry(n + r)], start=start)
                appends.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                state = verify_log(path, start=start)
                verifies.append(time.perf_counter() - t0)
            assert state.ok, state
            print(f"| {n + a.reps:,} | {path.stat().st_size / 1e6:.2f} MB | {statistics.median(appends) * 1e3:.0f} ms "
                  f"| {statistics.median(verifies) * 1e3:.0f} ms | {state.message() if hasattr(state, 'message') else 'ok'} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
