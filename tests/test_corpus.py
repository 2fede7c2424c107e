import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import missing_resource

from clustermine.method import corpus as C
from clustermine.core.errors import CorpusError


def test_normalize_and_dedupe():
    assert C.normalize_concept("  Hot_Dog ") == "hot dog"
    assert C.normalize_concept("galore(ip)") == "galore"
    assert C.dedupe(["Dog", "dog", "", "cat_fish", "Cat fish"]) == ["dog", "cat fish"]


def test_wordnet_counts_match_nltk_lemma_counts(monkeypatch):
    if not Path("/usr/share/wordnet/index.noun").exists():
        missing_resource("Debian wordnet-base not installed (/usr/share/wordnet/index.noun)")
    monkeypatch.setenv("CLUSTERMINE_WORDNET", "/usr/share/wordnet")
    nouns = C.load_corpus("wordnet-nouns")
    assert len(nouns) == 117_798  # == nltk's len(set(all_lemma_names('n'))) after normalisation
    assert "tench" in nouns.index() and "french horn" in nouns.index()
    both = C.load_corpus("wordnet-nouns-adjectives")
    assert len(both) == 136_139  # METHOD.md §5.2
    first = C.load_corpus("wordnet-nouns-first-lemma")
    assert len(first) == 67_186


def test_wordnet_from_nltk_zip(tmp_path, monkeypatch):
    # A user who ran nltk.download('wordnet') has corpora/wordnet.zip in an nltk data path.
    z = tmp_path / "nltk_data" / "corpora" / "wordnet.zip"
    z.parent.mkdir(parents=True)
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("wordnet/index.noun", "  1 header line\nwater_dog n 1 0\nzebra n 1 0\n")
        zf.writestr("wordnet/index.adj", "  header\nblue a 1 0\n")
    import nltk

    monkeypatch.delenv("CLUSTERMINE_WORDNET", raising=False)
    monkeypatch.setattr(nltk.data, "path", [str(tmp_path / "nltk_data")])
    assert C.load_corpus("wordnet-nouns").concepts == ("water dog", "zebra")
    assert C.load_corpus("wordnet-nouns-adjectives").concepts == ("water dog", "zebra", "blue")


def test_missing_wordnet_message_names_both_ways(monkeypatch, tmp_path):
    import nltk

    monkeypatch.setenv("CLUSTERMINE_WORDNET", str(tmp_path / "nowhere"))
    monkeypatch.setattr(nltk.data, "path", [str(tmp_path)])
    monkeypatch.setattr(C, "wordnet_candidates", lambda: [tmp_path / "nowhere"])
    with pytest.raises(CorpusError) as exc:
        C.load_corpus("wordnet-nouns")
    msg = str(exc.value)
    assert "apt-get install wordnet-base" in msg and "nltk.download('wordnet')" in msg


def test_custom_concept_file(tmp_path):
    p = tmp_path / "concepts.txt"
    p.write_text("# my vocabulary\nGolden_Retriever\n\ntabby cat\ngolden retriever\n", encoding="utf-8")
    corp = C.load_corpus(str(p))
    assert corp.concepts == ("golden retriever", "tabby cat")
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(CorpusError, match="UTF-8"):
        C.load_corpus(str(bad))
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n\n", encoding="utf-8")
    with pytest.raises(CorpusError, match="no concepts"):
        C.load_corpus(str(empty))
    with pytest.raises(CorpusError, match="not found"):
        C.load_corpus(str(tmp_path / "missing.txt"))
    with pytest.raises(CorpusError, match="unknown corpus"):
        C.load_corpus("wordnet-verbs")


def test_prompt_template_needs_placeholder():
    assert C.prompts(["dog"], "a photo of a {}.") == ["a photo of a dog."]
    with pytest.raises(CorpusError):
        C.prompts(["dog"], "no placeholder")


def test_embed_concepts_length_sorted_batches_keep_corpus_order():
    """Concepts are embedded in length-sorted batches for speed; every row must still be the
    embedding of its own concept (compared with one-by-one embedding, batch size 1: no padding)."""
    from clustermine.method.encoders import load_encoder

    enc = load_encoder("offline", device="cpu")
    concepts = ["x", "a very long multi word concept name indeed", "dog", "hot dog stand", "b",
                "chequered flag of the grand prix", "cat", "tench", "parachute"] * 3
    emb = C.embed_concepts(enc, concepts, "a photo of a {}.", batch_size=4)
    one_by_one = enc.encode_texts(C.prompts(concepts, "a photo of a {}."), batch_size=1)
    assert emb.shape == one_by_one.shape
    np.testing.assert_allclose(emb, one_by_one, atol=2e-3)  # float16 rounding of the cached form
    # and rows of different concepts really differ (a permutation bug could not hide)
    assert np.abs(emb[0] - emb[1]).max() > 0.05
