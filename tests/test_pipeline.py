"""End-to-end recognition on synthetic scenes with a tiny real ONNX model and a real FAISS index."""

import cv2
import numpy as np
import pytest

from pokedge import synth
from pokedge.capture.image import read_image
from pokedge.detection import geometry
from pokedge.gallery.build import read_cards_csv
from pokedge.recognition.decision import MATCH, UNKNOWN, Thresholds, decide
from pokedge.recognition.pipeline import STAGES, Recognizer


def _rows(synthetic_cards):
    return read_cards_csv(synthetic_cards / "cards.csv")


def _scene(rows, index, seed, conditions):
    card = read_image(rows[index].image)
    return synth.render_scene(card, np.random.default_rng(seed), conditions, frame_size=(960, 720))


@pytest.mark.parametrize("conditions", [("clean",), ("perspective",), ("rotation",), ("upside_down",)])
def test_recognizes_card_in_scene(tiny_recognizer, synthetic_cards, conditions):
    rows = _rows(synthetic_cards)
    scene = _scene(rows, 5, seed=11, conditions=conditions)
    result = tiny_recognizer.recognize(scene.frame)

    assert len(result.cards) >= 1
    best = max(result.cards, key=lambda c: c.score)
    assert best.card_id == rows[5].card.card_id
    assert geometry.quad_iou(best.quad, scene.quads[0]) > 0.8


def test_upside_down_card_reports_upright_quad(tiny_recognizer, synthetic_cards):
    rows = _rows(synthetic_cards)
    scene = _scene(rows, 3, seed=5, conditions=("upside_down",))
    card = max(tiny_recognizer.recognize(scene.frame).cards, key=lambda c: c.score)
    # The truth quad starts at the card's own top-left, wherever it lies in the frame.
    assert card.upside_down
    assert np.linalg.norm(card.quad[0] - scene.quads[0][0]) < 0.1 * np.ptp(scene.quads[0][:, 1])


def test_timings_cover_every_stage(tiny_recognizer, synthetic_cards):
    scene = _scene(_rows(synthetic_cards), 0, seed=1, conditions=("clean",))
    result = tiny_recognizer.recognize(scene.frame)
    assert set(result.timings_ms) == set(STAGES)


def test_empty_background_has_no_card(tiny_recognizer):
    frame = np.full((720, 960, 3), 90, np.uint8)
    assert tiny_recognizer.recognize(frame).cards == []


def test_card_outside_gallery_is_unknown(tiny_recognizer):
    """A card the gallery has never seen must not be matched once thresholds are strict."""
    rng = np.random.default_rng(99)
    stranger = synth.make_test_card(rng)
    scene = synth.render_scene(stranger, rng, ("clean",), frame_size=(960, 720))
    strict = Recognizer(tiny_recognizer.backend, tiny_recognizer.gallery,
                        Thresholds(match_score=0.95, match_margin=0.05, card_floor=-1.0))
    cards = strict.recognize(scene.frame).cards
    assert cards, "the detector should still find the card"
    assert all(card.status == UNKNOWN for card in cards)


def test_same_name_prints_are_listed_as_same_art(tiny_recognizer):
    gallery = tiny_recognizer.gallery
    pair = [cid for cid, card in gallery.cards.items() if card.name == "Pairmon"]
    assert len(pair) == 2
    rows = [gallery.card_ids.index(cid) for cid in pair]
    hits = tiny_recognizer.index.search(gallery.embeddings[rows[:1]], k=5)[0]
    decision = decide(hits, gallery, Thresholds(match_score=0.0, match_margin=0.0, card_floor=-1.0), same_art_delta=2.0)
    assert decision.status == MATCH
    assert pair[1] in decision.same_art


def test_identify_crops_finds_each_scan(tiny_recognizer, synthetic_cards):
    rows = _rows(synthetic_cards)
    decisions = tiny_recognizer.identify_crops([read_image(r.image) for r in rows])
    assert [d.hits[0].card_id for d in decisions] == [r.card.card_id for r in rows]


class _CountingBackend:
    """Wraps a backend and records the batch size of every embed call."""

    def __init__(self, backend):
        self.backend = backend
        self.contract = backend.contract
        self.name = backend.name
        self.calls: list[int] = []

    def embed(self, batch):
        self.calls.append(len(batch))
        return self.backend.embed(batch)


def _with_alternative(recognizer, scene, main_quad):
    """Make the recognizer's detector return one detection: `main_quad` with the true quad as an alternative."""
    from pokedge.detection.types import Detection

    shifted = scene.quads[0] + np.float32([40, 30])
    detection = Detection(quad=np.float32(main_quad), score=1.0, strategy="test",
                          alternatives=[np.float32(shifted if main_quad is scene.quads[0] else scene.quads[0])])
    recognizer.detector.detect = lambda frame: [detection]


def test_confident_main_quad_skips_the_alternatives(tiny_recognizer, synthetic_cards):
    rows = _rows(synthetic_cards)
    scene = _scene(rows, 5, seed=11, conditions=("clean",))
    counting = _CountingBackend(tiny_recognizer.backend)
    recognizer = Recognizer(counting, tiny_recognizer.gallery, Thresholds(0.85, 0.0, 0.1), index=tiny_recognizer.index)
    _with_alternative(recognizer, scene, scene.quads[0])

    result = recognizer.recognize(scene.frame)

    assert result.cards[0].card_id == rows[5].card.card_id
    assert result.cards[0].status == MATCH
    assert counting.calls == [2]


def test_unmatched_main_quad_gets_a_second_look(tiny_recognizer, synthetic_cards):
    rows = _rows(synthetic_cards)
    scene = _scene(rows, 5, seed=11, conditions=("clean",))
    counting = _CountingBackend(tiny_recognizer.backend)
    recognizer = Recognizer(counting, tiny_recognizer.gallery, Thresholds(0.85, 0.0, 0.1), index=tiny_recognizer.index)
    # The main quad covers a corner of the background; the true quad is only an alternative.
    _with_alternative(recognizer, scene, np.float32([[0, 0], [120, 0], [120, 170], [0, 170]]))

    result = recognizer.recognize(scene.frame)

    assert counting.calls == [2, 6], "then the alternative and the main quad's two strip extensions, both ways up"
    assert result.cards[0].card_id == rows[5].card.card_id
    assert geometry.quad_iou(result.cards[0].quad, scene.quads[0]) > 0.9
    assert set(result.timings_ms) >= {"detect", "preprocess", "embed", "search"}


def test_card_upper_part_finds_card(tiny_recognizer, synthetic_cards):
    from pokedge.detection.types import Detection

    rows = _rows(synthetic_cards)
    scene = _scene(rows, 5, seed=11, conditions=("perspective",))
    card_to_frame = cv2.getPerspectiveTransform(np.float32([[0, 0], [1, 0], [1, 1], [0, 1]]), scene.quads[0])
    upper = cv2.perspectiveTransform(np.float32([[[0, 0], [1, 0], [1, 0.55], [0, 0.55]]]), card_to_frame)[0]
    on_its_side = np.roll(upper, 1, axis=0)  # the strip looks like a card turned by 90 degrees
    recognizer = Recognizer(tiny_recognizer.backend, tiny_recognizer.gallery, Thresholds(0.85, 0.0, 0.1),
                            index=tiny_recognizer.index)
    recognizer.detector.detect = lambda frame: [Detection(quad=on_its_side, score=1.0, strategy="test")]

    card = recognizer.recognize(scene.frame).cards[0]

    assert (card.status, card.card_id) == (MATCH, rows[5].card.card_id)
    assert geometry.quad_iou(card.quad, scene.quads[0]) > 0.9


@pytest.mark.parametrize("card_floor, calls", [(-1.0, [2, 4]), (0.999, [2])], ids=["unknown", "not a card"])
def test_strip_extensions_unknown_only(tiny_recognizer, card_floor, calls):
    from pokedge.detection.types import Detection

    rng = np.random.default_rng(99)
    scene = synth.render_scene(synth.make_test_card(rng), rng, ("clean",), frame_size=(960, 720))
    counting = _CountingBackend(tiny_recognizer.backend)
    recognizer = Recognizer(counting, tiny_recognizer.gallery, Thresholds(0.95, 0.05, card_floor),
                            index=tiny_recognizer.index)
    recognizer.detector.detect = lambda frame: [Detection(quad=scene.quads[0], score=1.0, strategy="test")]

    recognizer.recognize(scene.frame)

    assert counting.calls == calls


def test_strip_extensions_switched_off(tiny_recognizer, synthetic_cards):
    rows = _rows(synthetic_cards)
    scene = _scene(rows, 5, seed=11, conditions=("clean",))
    counting = _CountingBackend(tiny_recognizer.backend)
    recognizer = Recognizer(counting, tiny_recognizer.gallery, Thresholds(0.85, 0.0, 0.1), index=tiny_recognizer.index,
                            strip_extensions=False)
    _with_alternative(recognizer, scene, np.float32([[0, 0], [120, 0], [120, 170], [0, 170]]))

    result = recognizer.recognize(scene.frame)

    assert counting.calls == [2, 2], "then only the alternative, both ways up"
    assert result.cards[0].card_id == rows[5].card.card_id
