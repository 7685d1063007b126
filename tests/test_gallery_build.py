import csv

import numpy as np
import pytest

from pokedge.backends.onnx import OnnxBackend
from pokedge.contract import load_contract
from pokedge.errors import GalleryError
from pokedge.gallery.build import build_gallery, read_cards_csv
from pokedge.gallery.store import load_gallery


@pytest.fixture(scope="module")
def backend(tiny_contract):
    engine = OnnxBackend(load_contract(tiny_contract))
    yield engine
    engine.close()


def test_views_add_rows_after_the_scans(tmp_path, backend, synthetic_cards, tiny_gallery):
    rows = read_cards_csv(synthetic_cards / "cards.csv")[:6]
    build_gallery(rows, backend, tmp_path / "g", views=2, view_seed=3)
    gallery = load_gallery(tmp_path / "g")

    assert len(gallery) == 18
    assert gallery.card_ids[:6] == [r.card.card_id for r in rows]
    assert gallery.card_ids[6:12] == gallery.card_ids[:6]
    assert gallery.manifest["views_per_card"] == 2
    plain = load_gallery(tiny_gallery)
    assert np.allclose(gallery.embeddings[:6], plain.embeddings[:6], atol=1e-5)
    assert not np.allclose(gallery.embeddings[6:12], gallery.embeddings[:6], atol=1e-3)


def test_views_are_reproducible(tmp_path, backend, synthetic_cards):
    rows = read_cards_csv(synthetic_cards / "cards.csv")[:3]
    build_gallery(rows, backend, tmp_path / "a", views=1, view_seed=9)
    build_gallery(rows, backend, tmp_path / "b", views=1, view_seed=9)
    assert np.array_equal(load_gallery(tmp_path / "a").embeddings, load_gallery(tmp_path / "b").embeddings)


def test_build_resumes_finished_chunks(tmp_path, backend, synthetic_cards, monkeypatch):
    from pokedge.gallery import build as build_module

    rows = read_cards_csv(synthetic_cards / "cards.csv")
    monkeypatch.setattr(build_module, "CHUNK", 8)
    calls = []
    cut = {"armed": True}
    original = build_module._embed_chunk

    def failing(chunk, *args, **kwargs):
        calls.append(len(chunk))
        if cut["armed"] and len(calls) == 2:
            cut["armed"] = False
            raise GalleryError("simulated power cut")
        return original(chunk, *args, **kwargs)

    monkeypatch.setattr(build_module, "_embed_chunk", failing)
    with pytest.raises(GalleryError):
        build_gallery(rows, backend, tmp_path / "g")
    calls.clear()
    build_gallery(rows, backend, tmp_path / "g")
    assert calls == [8, 8]  # chunk 1 was saved before the cut and is not embedded again
    assert len(load_gallery(tmp_path / "g")) == len(rows)


def test_missing_scan_names_the_line(tmp_path):
    path = tmp_path / "cards.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["card_id", "name", "set_id", "number", "image_path"])
        writer.writerow(["x-1", "Missingmon", "x", "1", "nowhere/x-1.jpg"])
    with pytest.raises(GalleryError, match="line 2"):
        read_cards_csv(path)


def test_missing_column_is_named(tmp_path):
    path = tmp_path / "cards.csv"
    path.write_text("card_id,name\nx-1,Foo\n")
    with pytest.raises(GalleryError, match="set_id"):
        read_cards_csv(path)
