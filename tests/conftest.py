"""Shared fixtures: real images from ../shared/data, a persistent cache, small prebuilt runs."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
from hypothesis import settings

ROOT = Path(__file__).resolve().parents[1]
# Test resources; the overrides exist so that tests/test_ci_resources.py can fake a machine without them.
SHARED_DATA = Path(os.environ.get("CLUSTERMINE_TEST_DATA") or ROOT.parent / "shared" / "data")
CHROMIUM = Path(os.environ.get("CLUSTERMINE_TEST_CHROMIUM") or "/usr/bin/chromium")


def in_ci() -> bool:
    """True on a CI runner (``CI=true``, as GitHub Actions, GitLab and most others set it)."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


# CI runs property tests derandomized (reproducible pass/fail); local runs keep exploring.
settings.register_profile("ci", derandomize=True)
if in_ci():
    settings.load_profile("ci")

CI_HINT = ("CI=true: test resources are required on CI (a missing one would silently skip dozens of tests). "
           "Provide ../shared/data beside the checkout, WordNet (apt-get install wordnet-base) and Chromium "
           "(bash scripts/setup_env.sh --with-browser).")


def missing_resource(what: str) -> None:
    """Skip the test on a developer machine; fail it, loudly, on CI."""
    if in_ci():
        pytest.fail(f"{what} — {CI_HINT}", pytrace=False)
    pytest.skip(what)


def missing_ci_resources(data_dir: Path, chromium: Path, need_browser: bool) -> list[str]:
    """What a CI run lacks: the real-image folder, WordNet, Chromium + Playwright (for browser tests)."""
    from clustermine.method.corpus import find_wordnet
    from clustermine.core.errors import CorpusError

    out = []
    if not data_dir.is_dir():
        out.append(f"real test images not found: {data_dir} (expected ../shared/data beside the checkout)")
    try:
        find_wordnet()
    except CorpusError as exc:
        out.append(f"WordNet not found: {exc}")
    if need_browser:
        if not chromium.exists():
            out.append(f"Chromium not found: {chromium}")
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError as exc:
            out.append(f"Playwright not importable: {exc}")
    return out


_SESSION = pytest.StashKey()  # the session, for pytest_unconfigure's exit status


def pytest_collection_modifyitems(config, items) -> None:
    """The one rule for ``@pytest.mark.gpu`` tests: skipped where torch sees no CUDA device (CI runners
    and most developer machines have none). ``CLUSTERMINE_TEST_GPU=1`` (a GPU runner) runs them anyway,
    so a broken CUDA setup there fails instead of skipping."""
    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_items or os.environ.get("CLUSTERMINE_TEST_GPU") == "1":
        return
    import torch

    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="gpu test: no CUDA device (torch.cuda.is_available() is False)")
        for item in gpu_items:
            item.add_marker(skip)


def pytest_sessionfinish(session, exitstatus) -> None:
    session.config.stash[_SESSION] = session


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config) -> None:
    """Leave the test process with pytest's own exit status once everything is reported, without the
    interpreter's finalisation: a native library's threads (Ray's gRPC, Playwright's driver, torch's
    pools) can crash there *after* every test passed (seen once on CI: "815 passed", then SIGSEGV, exit
    139). Nothing runs after this hook but that teardown; ``CLUSTERMINE_PYTEST_PLAIN_EXIT=1`` keeps it."""
    session = config.stash.get(_SESSION, None)
    if session is None or os.environ.get("CLUSTERMINE_PYTEST_PLAIN_EXIT") == "1":
        return
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):
            pass
    os._exit(int(session.exitstatus))


def pytest_collection_finish(session) -> None:
    """On CI, stop before running anything when a resource the collected tests need is missing."""
    if not in_ci() or not session.items:
        return
    need_browser = any(item.get_closest_marker("browser") for item in session.items)
    problems = missing_ci_resources(SHARED_DATA, CHROMIUM, need_browser)
    if problems:
        pytest.exit("missing test resources on CI:\n  - " + "\n  - ".join(problems) + "\n" + CI_HINT,
                    returncode=pytest.ExitCode.USAGE_ERROR)
os.environ.setdefault("CLUSTERMINE_CACHE", str(ROOT / ".cache" / "clustermine"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.pop("CLUSTERMINE_RAY_ADDRESS", None)  # a developer's cluster must not take over the local-path tests

IMAGENETTE_ID = ["n01440764", "n02102040", "n02979186", "n03000684", "n03028079", "n03394916"]  # 6 ID classes
IMAGENETTE_OOD = ["n03417042", "n03425413", "n03445777", "n03888257"]


def shared(*parts: str) -> Path:
    """Path under ../shared/data; skips the test when the data set is absent (fails it on CI)."""
    p = SHARED_DATA.joinpath(*parts)
    if not p.exists():
        missing_resource(f"real data not available: {p}")
    return p


def copy_subset(src: Path, dst: Path, classes: list[str] | None = None, per_class: int | None = None) -> Path:
    """Copy the first ``per_class`` files of each class folder (sorted) into ``dst/<class>/``."""
    dst.mkdir(parents=True, exist_ok=True)
    for cls_dir in sorted(p for p in src.iterdir() if p.is_dir()):
        if classes is not None and cls_dir.name not in classes:
            continue
        files = sorted(f for f in cls_dir.iterdir() if f.is_file())
        (dst / cls_dir.name).mkdir(exist_ok=True)
        for f in files[:per_class]:
            shutil.copy2(f, dst / cls_dir.name / f.name)
    return dst


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        missing_resource(f"real data not available: {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def small_images(tmp_path_factory) -> Path:
    """40 real photos: 4 Imagenette classes x 10 (tench, springer, cassette player, church)."""
    src = shared("imagenette_train100")
    return copy_subset(src, tmp_path_factory.mktemp("small_images"),
                       ["n01440764", "n02102040", "n02979186", "n03028079"], 10)


@pytest.fixture(scope="session")
def small_run_template(small_images, tmp_path_factory) -> Path:
    """A finished run (offline encoder, k-means, C=4, WordNet nouns) on ``small_images``. Read-only:
    tests that modify a run use ``small_run`` (a fresh copy)."""
    from clustermine.workflows.pipeline import MineConfig, mine

    out = tmp_path_factory.mktemp("runs") / "small-run"
    mine(small_images, out, MineConfig(n_clusters=4, clusterer="kmeans", seed=0))
    return out


@pytest.fixture
def small_run(small_run_template, tmp_path) -> Path:
    """A private, editable copy of the small prebuilt run."""
    dst = tmp_path / small_run_template.name
    shutil.copytree(small_run_template, dst)
    return dst
