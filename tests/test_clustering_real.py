"""TEMI vs k-means on real offline features (the engine issue's clustering acceptance test)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from clustermine.method.clustering import KMeansClusterer, TEMI
from clustermine.method.encoders import load_encoder
from clustermine.method.metrics import clustering_scores
from clustermine.workflows.pipeline import load_folder
from conftest import shared

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def imagenette_features():
    folder = shared("imagenette_train100")
    records, feats = load_folder(folder, load_encoder("offline"))
    labels = np.array([Path(r.path).parts[0] for r in records])
    return feats, labels


def test_temi_matches_kmeans_on_imagenette(imagenette_features):
    feats, labels = imagenette_features
    assert feats.shape[0] == 1000 and len(set(labels)) == 10
    km = clustering_scores(labels, KMeansClusterer(10, random_state=0).fit_predict(feats))
    temi = clustering_scores(labels, TEMI(10, random_state=0).fit_predict(feats))
    print(f"k-means {km}  TEMI {temi}")
    assert temi["acc"] >= km["acc"] - 0.02
    assert temi["nmi"] >= km["nmi"] - 0.02
