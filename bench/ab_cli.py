"""Issue 19's "every CLI verb gives the same output on the same run": the CLI of an old checkout and of
this one, verb by verb, each on its own copy of the same run, compared after normalising what must
differ (the run's path, temporary folders, wall-clock timestamps and durations).

    git worktree add --detach /tmp/ab_old <commit before the change>
    .venv/bin/python bench/ab_cli.py --old /tmp/ab_old

One small real run is mined first (k-means, C = 4, 40 Imagenette images, seed 0) with this checkout;
then the same sequence of verbs runs against a copy for each checkout: concepts (text and JSON),
search (text and JSON), score, evaluate, exclude + --list, a concept edit, remine, stability, export
(every file), report (the HTML's text), diff. Writes bench/results/ab_cli.json and prints one line
per verb: same / differs (with the first differing line).
"""

from __future__ import annotations

import argparse
import difflib
import html
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
PY = str(ROOT / ".venv" / "bin" / "python")

_TS = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d(:\d\d(\.\d+)?)?(\+00:00|Z| UTC)?")
_DUR = re.compile(r"\b\d+(\.\d+)? ?(ms|s|min|seconds?)\b")


def normalise(text: str, paths: dict[str, str]) -> str:
    """Replace run paths / temp dirs by placeholders, then timestamps and durations."""
    for real, name in sorted(paths.items(), key=lambda kv: -len(kv[0])):
        text = text.replace(real, name)
    text = _TS.sub("<TS>", text)
    return _DUR.sub("<DUR>", text)


def html_text(doc: str) -> str:
    """The visible text of an HTML report, one non-empty line per block, whitespace collapsed."""
    doc = re.sub(r"(?is)<(script|style)\b.*?</\1>", " ", doc)
    doc = re.sub(r"(?s)<[^>]+>", "\n", doc)
    lines = (re.sub(r"\s+", " ", html.unescape(ln)).strip() for ln in doc.splitlines())
    return "\n".join(ln for ln in lines if ln)


def cli(checkout: Path, args: list[str], env: dict) -> str:
    proc = subprocess.run([PY, "-m", "clustermine", *args], cwd=checkout, env={**env, "PYTHONPATH": str(checkout)},
                          capture_output=True, text=True, timeout=900)
    return f"rc={proc.returncode}\n{proc.stdout}\n{proc.stderr if proc.returncode else ''}"


def folder_text(folder: Path) -> str:
    out = []
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            rel = p.relative_to(folder)
            try:
                body = p.read_text(encoding="utf-8")
                body = html_text(body) if p.suffix == ".html" else body
            except UnicodeDecodeError:
                body = f"<{p.stat().st_size} bytes binary>"
            out.append(f"== {rel}\n{body}")
    return "\n".join(out)


def sequence(checkout: Path, run: Path, work: Path, env: dict, images: Path, base_run: Path) -> dict[str, str]:
    """Run the verbs in order on ``run`` with ``checkout``; verb -> raw output."""
    files = sorted(p for p in images.iterdir() if p.is_file())
    id_dir, ood_dir = DATA / "imagenette_val100" / "n01440764", DATA / "dtd10"
    out: dict[str, str] = {}
    out["concepts"] = cli(checkout, ["concepts", str(run)], env)
    out["concepts --json"] = cli(checkout, ["concepts", str(run), "--json"], env)
    out["search"] = cli(checkout, ["search", str(run), "fish", "--k", "5"], env)
    out["search --json"] = cli(checkout, ["search", str(run), "church", "--k", "5", "--json"], env)
    out["score --json"] = cli(checkout, ["score", str(run), *map(str, files[:3]), "--json"], env)
    out["evaluate --json"] = cli(checkout, ["evaluate", str(run), "--id", str(id_dir), "--ood", str(ood_dir), "--json"], env)
    out["exclude"] = cli(checkout, ["exclude", str(run), *map(str, files[:2]), "--user", "ab"], env)
    out["exclude --list"] = cli(checkout, ["exclude", str(run), "--list"], env)
    first = json.loads(out["concepts --json"].split("\n", 1)[1])[0]
    first_text = first["text"] if isinstance(first, dict) else str(first)
    out["concepts --reject"] = cli(checkout, ["concepts", str(run), "--reject", first_text, "--user", "ab"], env)
    out["remine --json"] = cli(checkout, ["remine", str(run), "--user", "ab", "--json"], env)
    out["stability --json"] = cli(checkout, ["stability", str(run), "--seeds", "2", "--json"], env)
    exp = work / "export"
    out["export"] = cli(checkout, ["export", str(run), "--out", str(exp)], env)
    out["export files"] = folder_text(exp)
    rep = work / "report.html"
    out["report"] = cli(checkout, ["report", str(run), "--out", str(rep)], env)
    out["report text"] = html_text(rep.read_text(encoding="utf-8")) if rep.is_file() else "<no report>"
    out["diff --json"] = cli(checkout, ["diff", str(base_run), str(run), "--json"], env)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--old", required=True, type=Path, help="checkout of the commit before the change")
    a = ap.parse_args()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.setdefault("CLUSTERMINE_CACHE", str(Path.home() / ".cache" / "clustermine"))
    tmp = Path(tempfile.mkdtemp(prefix="ab_cli_"))
    try:
        images = tmp / "images"
        images.mkdir()
        for cls in ("n01440764", "n03028079", "n03394916", "n03888257"):
            for f in sorted((DATA / "imagenette_train100" / cls).iterdir())[:10]:
                shutil.copy2(f, images / f"{cls}_{f.name}")
        base = tmp / "base_run"
        mined = cli(ROOT, ["mine", str(images), "--out", str(base), "--clusterer", "kmeans", "--clusters", "4",
                           "--seed", "0"], env)
        if not mined.startswith("rc=0"):
            print(mined)
            return 1
        results: dict[str, dict[str, str]] = {}
        for name, checkout in (("old", a.old.resolve()), ("new", ROOT)):
            run, work = tmp / f"run_{name}", tmp / f"work_{name}"
            shutil.copytree(base, run)
            work.mkdir()
            raw = sequence(checkout, run, work, env, images, base)
            paths = {str(run): "<RUN>", str(work): "<WORK>", str(tmp): "<TMP>", str(checkout): "<CHECKOUT>"}
            results[name] = {k: normalise(v, paths) for k, v in raw.items()}
        rows = []
        for verb in results["new"]:
            old, new = results["old"][verb], results["new"][verb]
            diff = [ln for ln in difflib.unified_diff(old.splitlines(), new.splitlines(), "old", "new", n=0, lineterm="")
                    if not ln.startswith(("---", "+++", "@@"))]
            rows.append({"verb": verb, "same": old == new, "n_diff_lines": len(diff), "diff": diff[:20],
                         "lines": len(new.splitlines())})
            status = "same" if old == new else f"differs ({len(diff)} lines): {diff[:2]}"
            print(f"{verb:22s} {len(new.splitlines()):5d} lines  {status}")
        out = ROOT / "bench" / "results" / "ab_cli.json"
        out.write_text(json.dumps({"old": str(a.old), "rows": rows}, indent=1), encoding="utf-8")
        print(f"-> {out}")
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
