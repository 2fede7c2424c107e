"""`clustermine prepare`: the corpus is embedded ahead of time, and `mine` then reads it from the cache."""

import numpy as np

from clustermine import cli
from clustermine.method.corpus import corpus_embeddings, load_corpus
from clustermine.method.encoders import load_encoder


def test_prepare_embeds_the_corpus_once_and_mine_reuses_it(tmp_path, capsys):
    concepts = tmp_path / "concepts.txt"
    concepts.write_text("tench\nchurch\nparachute\ngolf ball\nfrench horn\n")
    cache = tmp_path / "cache"
    argv = ["prepare", "--corpus", str(concepts), "--cache-dir", str(cache), "--device", "cpu", "--quiet"]
    assert cli.main(argv) == 0
    first = capsys.readouterr().out
    assert "5 concepts" in first and "embedded in" in first
    files = sorted((cache / "text").glob("*.npy"))
    assert len(files) == 1
    stored = np.load(files[0]).astype(np.float32)
    enc = load_encoder("offline", device="cpu")
    expected = enc.encode_texts([enc.text_template.format("tench")], batch_size=1)
    np.testing.assert_allclose(stored[0], expected[0], atol=2e-3)  # row 0 is "tench"
    # a second call finds the cache; the mining code path reads the very same file without embedding
    assert cli.main(argv) == 0
    assert "already cached" in capsys.readouterr().out
    calls = []
    emb, path = corpus_embeddings(enc, load_corpus(str(concepts)), cache_dir=cache / "text",
                                  progress=lambda d, t: calls.append((d, t)))
    assert path == files[0] and calls == [(5, 5)]  # one progress call: read from the cache
    np.testing.assert_array_equal(emb, stored)


def test_prepare_refuses_an_unknown_corpus_with_a_clear_error(tmp_path, capsys):
    rc = cli.main(["prepare", "--corpus", str(tmp_path / "missing.txt"), "--cache-dir", str(tmp_path), "--quiet"])
    assert rc == 2
    assert "missing.txt" in capsys.readouterr().err
