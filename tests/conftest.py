"""Shared fixtures: real images from ../shared/data, a persistent cache, small prebuilt runs."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from hypothesis import settings

# CI runs property tests derandomized (reproducible pass/fail); local runs keep exploring.
settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
os.environ.setdefault("CLUSTERMINE_CACHE", str(ROOT / ".cache" / "clustermine"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

IMAGENETTE_ID = ["n01440764", "n02102040", "n02979186", "n03000684", "n03028079", "n03394916"]  # 6 ID classes
IMAGENETTE_OOD = ["n03417042", "n03425413", "n03445777", "n03888257"]


def shared(*parts: str) -> Path:
    """Path under ../shared/data; skips the test when the data set is absent."""
    p = SHARED_DATA.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"real data not available: {p}")
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
        pytest.skip(f"real data not available: {SHARED_DATA}")
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
    from clustermine.pipeline import MineConfig, mine

    out = tmp_path_factory.mktemp("runs") / "small-run"
    mine(small_images, out, MineConfig(n_clusters=4, clusterer="kmeans", seed=0))
    return out


@pytest.fixture
def small_run(small_run_template, tmp_path) -> Path:
    """A private, editable copy of the small prebuilt run."""
    dst = tmp_path / small_run_template.name
    shutil.copytree(small_run_template, dst)
    return dst
