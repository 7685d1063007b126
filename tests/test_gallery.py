import json

import numpy as np
import pytest

from pokedge.errors import GalleryError
from pokedge.gallery.index import GalleryIndex
from pokedge.gallery import store
from pokedge.gallery.store import CardInfo, CardTable, check_compatible, embeddings_digest, load_gallery, save_gallery


def _unit(rows, dim=8, seed=0):
    vectors = np.random.default_rng(seed).normal(size=(rows, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _cards(ids):
    return {cid: CardInfo(cid, f"Name {cid}", cid.split("-")[0], cid.split("-")[1]) for cid in ids}


@pytest.fixture()
def small_gallery(tmp_path):
    ids = ["a-1", "a-2", "a-3", "a-1"]  # a-1 has two scans, like the original database
    save_gallery(tmp_path / "g", _unit(4), ids, _cards(set(ids)), producer="model:1")
    return tmp_path / "g"


def test_round_trip(small_gallery):
    gallery = load_gallery(small_gallery)
    assert gallery.producer == "model:1"
    assert gallery.card_ids == ["a-1", "a-2", "a-3", "a-1"]
    assert gallery.duplicate_ids == 1
    assert gallery.cards["a-2"].number == "2"


def test_files_in_original_format(small_gallery):
    index = json.loads((small_gallery / "index.json").read_text())
    metadata = json.loads((small_gallery / "metadata.json").read_text())
    assert index["0"] == "a-1"
    assert metadata["a-3"]["set"] == "a"
    assert np.load(small_gallery / "embeddings.npy").dtype == np.float32


def test_index_count_mismatch(small_gallery):
    (small_gallery / "index.json").write_text(json.dumps({"0": "a-1"}))
    with pytest.raises(GalleryError, match="maps 1 rows, but embeddings.npy has 4"):
        load_gallery(small_gallery)


def test_card_without_metadata(small_gallery):
    metadata = json.loads((small_gallery / "metadata.json").read_text())
    del metadata["a-2"]
    (small_gallery / "metadata.json").write_text(json.dumps(metadata))
    with pytest.raises(GalleryError, match="no entry for 1 card ids"):
        load_gallery(small_gallery)


def test_truncated_embeddings(small_gallery):
    data = (small_gallery / "embeddings.npy").read_bytes()
    (small_gallery / "embeddings.npy").write_bytes(data[: len(data) - 40])
    with pytest.raises(GalleryError, match="embeddings.npy"):
        load_gallery(small_gallery)


def test_rows_not_unit_norm(small_gallery):
    np.save(small_gallery / "embeddings.npy", _unit(4) * 3)
    with pytest.raises(GalleryError, match="not unit norm"):
        load_gallery(small_gallery)


def test_manifest_without_producer(small_gallery):
    manifest = json.loads((small_gallery / "gallery.json").read_text())
    del manifest["producer"]
    (small_gallery / "gallery.json").write_text(json.dumps(manifest))
    with pytest.raises(GalleryError, match="producer"):
        load_gallery(small_gallery)


def test_other_producer_names_both(small_gallery):
    gallery = load_gallery(small_gallery)
    with pytest.raises(GalleryError, match="built by model model:1, but the active model is other:2"):
        check_compatible(gallery, "other:2", 8)


def test_other_dim_refused(small_gallery):
    gallery = load_gallery(small_gallery)
    with pytest.raises(GalleryError, match="8-dim embeddings"):
        check_compatible(gallery, "model:1", 768)


def test_search_deduplicates_by_card(small_gallery):
    gallery = load_gallery(small_gallery)
    index = GalleryIndex(gallery)
    hits = index.search(gallery.embeddings[:1], k=3)[0]
    assert [h.card_id for h in hits][0] == "a-1"
    assert len({h.card_id for h in hits}) == len(hits) == 3
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)


def test_search_rejects_wrong_dim(small_gallery):
    index = GalleryIndex(load_gallery(small_gallery))
    with pytest.raises(ValueError, match="float32"):
        index.search(np.zeros((1, 5), np.float32))


def test_rebuilt_model_with_same_id_refused(tmp_path):
    ids = ["a-1", "a-2"]
    save_gallery(tmp_path / "g", _unit(2), ids, _cards(ids), producer="model:1",
                 extra={"producer_sha256": "a" * 64})
    gallery = load_gallery(tmp_path / "g")
    check_compatible(gallery, "model:1", 8, "a" * 64)
    with pytest.raises(GalleryError, match="sha256"):
        check_compatible(gallery, "model:1", 8, "b" * 64)


def test_card_table_round_trip():
    cards = [
        CardInfo("a-1", "Plain", "a", "1", "Set A"),
        CardInfo("a-2", "With\x1fseparator", "a", "2"),
        CardInfo("a-3", "Extra", "a", "3", extra={"rarity": "Rare", "hp": 60}),
    ]
    table = CardTable(cards)
    assert len(table) == 3
    assert list(table) == ["a-1", "a-2", "a-3"]
    assert "a-2" in table
    assert "b-1" not in table
    for card in cards:
        assert table[card.card_id] == card
    assert table.get("b-1") is None


def test_loaded_cards_are_a_card_table(small_gallery):
    gallery = load_gallery(small_gallery)
    assert isinstance(gallery.cards, CardTable)
    assert gallery.cards["a-1"] == CardInfo("a-1", "Name a-1", "a", "1")


def test_mapped_and_read_galleries_agree(small_gallery):
    mapped = load_gallery(small_gallery)
    read = load_gallery(small_gallery, mmap=False)
    assert mapped.row_file is not None and read.row_file is None
    assert np.array_equal(mapped.embeddings, read.embeddings)
    assert mapped.digest == read.digest == embeddings_digest(read.embeddings)
    rows = np.array([[3, 0, 3], [1, 1, 2]])
    assert np.array_equal(mapped.rows(rows), read.embeddings[rows])
    assert np.array_equal(read.rows(rows), read.embeddings[rows])


def test_rows_out_of_range(small_gallery):
    with pytest.raises(IndexError, match="0..3"):
        load_gallery(small_gallery).rows(np.array([4]))


@pytest.mark.parametrize("mmap", [True, False])
def test_bad_row_found_after_first_block(small_gallery, monkeypatch, mmap):
    monkeypatch.setattr(store, "ROW_BLOCK_BYTES", 8 * 4)  # one 8-dim row a block
    vectors = _unit(4)
    vectors[3, 0] = np.nan
    np.save(small_gallery / "embeddings.npy", vectors)
    with pytest.raises(GalleryError, match="rows 3 to 3"):
        load_gallery(small_gallery, mmap=mmap)


def test_fortran_order_embeddings_read_not_mapped(small_gallery):
    vectors = _unit(4)
    np.save(small_gallery / "embeddings.npy", np.asfortranarray(vectors))
    gallery = load_gallery(small_gallery)
    assert gallery.row_file is None
    assert np.array_equal(gallery.embeddings, vectors)
    assert gallery.digest == embeddings_digest(vectors)
