"""Same-art groups: found at gallery build, stored beside the gallery and listed with a match."""

from __future__ import annotations

import json
import shutil

import pytest

from pokedge.errors import GalleryError
from pokedge.gallery.same_art import FILENAME, group_pairs, load_same_art
from pokedge.gallery.store import load_gallery
from pokedge.recognition.decision import MATCH, Thresholds, decide


def test_pairs_join_into_groups():
    groups = group_pairs([("a-1", "b-1"), ("b-1", "c-1"), ("x-2", "y-2")])

    assert groups == [["a-1", "b-1", "c-1"], ["x-2", "y-2"]]


def test_gallery_build_writes_the_reprint_group(tiny_gallery):
    document = json.loads((tiny_gallery / FILENAME).read_text())

    assert document["groups"] == [["test1-1", "test2-1"]]


def test_loaded_gallery_knows_both_prints(tiny_gallery):
    gallery = load_gallery(tiny_gallery)

    assert gallery.same_art["test1-1"] == ("test2-1",)
    assert gallery.same_art["test2-1"] == ("test1-1",)
    assert "test1-2" not in gallery.same_art


def test_unknown_ids_are_dropped(tmp_path, caplog):
    document = {"schema": "pokedge.same_art/1", "groups": [["a-1", "b-1", "gone-1"], ["c-1", "gone-2"]]}
    (tmp_path / FILENAME).write_text(json.dumps(document))

    with caplog.at_level("WARNING"):
        others = load_same_art(tmp_path, ["a-1", "b-1", "c-1"])

    assert others == {"a-1": ("b-1",), "b-1": ("a-1",)}
    assert "2 card ids" in caplog.text


@pytest.mark.parametrize("text", ["{not json", '{"schema": "other", "groups": []}', '{"schema": "pokedge.same_art/1"}',
                                  '{"schema": "pokedge.same_art/1", "groups": [[1, 2]]}'])
def test_malformed_file_is_rejected(tmp_path, text):
    (tmp_path / FILENAME).write_text(text)

    with pytest.raises(GalleryError, match=FILENAME):
        load_same_art(tmp_path, ["a-1"])


def test_gallery_without_the_file_has_no_groups(tiny_gallery, tmp_path):
    copy = tmp_path / "gallery"
    shutil.copytree(tiny_gallery, copy)
    (copy / FILENAME).unlink()

    assert load_gallery(copy).same_art == {}


def test_decision_lists_the_other_print_even_when_far(tiny_gallery):
    from pokedge.gallery.index import Hit

    gallery = load_gallery(tiny_gallery)
    # The other print is not among the hits at all, so only the group can name it.
    hits = [Hit("test1-1", 0.9, 0), Hit("test1-2", 0.2, 1)]

    decision = decide(hits, gallery, Thresholds(match_score=0.5, match_margin=0.1, card_floor=0.1))

    assert decision.status == MATCH
    assert decision.same_art == ["test2-1"]
