"""Blurred references (pokedge.gallery.blurred) and the check that uses them (pokedge.recognition.blur_check)."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from pokedge.backends.onnx import OnnxBackend
from pokedge.capture.image import read_image
from pokedge.contract import load_contract
from pokedge.errors import GalleryError
from pokedge.evaluation.calibration import Samples, fit_blur_check, subset_gallery
from pokedge.gallery import blurred
from pokedge.gallery.index import GalleryIndex
from pokedge.gallery.store import CardInfo, Gallery, load_gallery
from pokedge.preprocess import prepare_batch
from pokedge.recognition import blur_check
from pokedge.recognition.decision import MATCH, UNKNOWN, Thresholds, decide, load_thresholds

DIM = 8


def unit(vector) -> np.ndarray:
    vector = np.asarray(vector, dtype=np.float32)
    return vector / np.linalg.norm(vector)


def toy_gallery(clean: dict[str, np.ndarray], blurry: dict[str, list[np.ndarray]]) -> Gallery:
    """A gallery of unit vectors with one blurred row set per card, and names equal to the ids."""
    card_ids = list(clean)
    cards = {card_id: CardInfo(card_id, card_id, "set", "1") for card_id in card_ids}
    values, scales = blurred.quantize(np.stack([np.stack(blurry[card_id]) for card_id in card_ids]))
    refs = blurred.BlurredRefs(values, scales, {card_id: n for n, card_id in enumerate(card_ids)})
    return Gallery(np.stack([clean[card_id] for card_id in card_ids]), card_ids, cards, {"producer": "toy"},
                   blurred=refs)


@pytest.fixture()
def toy():
    """Card a's blurred copy points where a blurred photo of a lands; b and c stay apart."""
    rng = np.random.default_rng(3)
    basis = [unit(rng.normal(size=DIM)) for _ in range(4)]
    photo_of_a = unit(0.45 * basis[0] + 0.89 * basis[3])
    clean = {"a": basis[0], "b": basis[1], "c": basis[2]}
    blurry = {"a": [unit(0.2 * basis[0] + 0.98 * basis[3])], "b": [basis[1]], "c": [basis[2]]}
    return toy_gallery(clean, blurry), photo_of_a


THRESHOLDS = Thresholds(match_score=0.6, match_margin=0.1, card_floor=0.1, blur_score=0.8, blur_margin=0.2)


def search(gallery: Gallery, query: np.ndarray):
    return GalleryIndex(gallery).search(query[None], 3)[0]


def test_quantize_keeps_cosines():
    rng = np.random.default_rng(0)
    vectors = np.stack([unit(v) for v in rng.normal(size=(50, 768))])
    values, scales = blurred.quantize(vectors)

    restored = values.astype(np.float32) * scales[:, None]

    assert values.dtype == np.int8
    assert np.min(np.sum(restored * vectors, axis=1)) > 0.999


def test_check_matches_blurred_photo(toy):
    gallery, photo = toy
    decision = decide(search(gallery, photo), gallery, THRESHOLDS)
    assert decision.status == UNKNOWN, "the clean rows alone leave the photo unknown"

    checked = blur_check.check(decision, photo, gallery, THRESHOLDS)

    assert checked.status == MATCH
    assert checked.blur_matched
    assert checked.hits[0].card_id == "a"
    assert checked.hits[0].score > 0.9


def test_check_keeps_unknown_far_query(toy):
    gallery, _ = toy
    far = unit(np.r_[np.ones(DIM - 1), -3.0])
    decision = decide(search(gallery, far), gallery, replace(THRESHOLDS, card_floor=-1.0))

    checked = blur_check.check(decision, far, gallery, THRESHOLDS)

    assert checked is decision


def test_check_off_without_pair(toy):
    gallery, photo = toy
    pairless = replace(THRESHOLDS, blur_score=None, blur_margin=None)
    decision = decide(search(gallery, photo), gallery, pairless)

    assert blur_check.check(decision, photo, gallery, pairless) is decision


def test_check_leaves_matches_alone(toy):
    gallery, _ = toy
    query = gallery.embeddings[1]
    decision = decide(search(gallery, query), gallery, THRESHOLDS)
    assert decision.status == MATCH

    assert blur_check.check(decision, query, gallery, THRESHOLDS) is decision


def test_subset_keeps_chosen_cards(toy):
    gallery, photo = toy

    reduced = subset_gallery(gallery, {"b", "c"})

    assert sorted(reduced.blurred.card_rows) == ["b", "c"]
    scores = reduced.blurred.similarities(["b", "c", "a"], photo)
    assert np.allclose(scores[:2], gallery.blurred.similarities(["b", "c"], photo), atol=1e-6)
    assert scores[2, 0] == -1.0, "a card without blurred rows scores -1"


def test_blurred_views_of_scan():
    scan = np.zeros((440, 315, 3), np.uint8)
    scan[:, 150:165] = 255

    views = blurred.blurred_views(scan)

    assert len(views) == len(blurred.BLURS)
    assert all(view.shape == (352, 252, 3) for view in views)
    horizontal = views[0][:, :, 0].astype(np.float32)
    assert horizontal[200, 115:140].max() > 0, "the 0-degree streak smears the bar sideways"


@pytest.fixture(scope="module")
def blurred_gallery(tiny_gallery):
    return load_gallery(tiny_gallery)


def test_build_embeds_each_blur(blurred_gallery, tiny_contract, synthetic_cards):
    refs = blurred_gallery.blurred
    card_id = blurred_gallery.card_ids[3]
    backend = OnnxBackend(load_contract(tiny_contract))
    views = blurred.blurred_views(read_image(synthetic_cards / f"{card_id}.jpg"))
    embedded = backend.embed(prepare_batch(views, backend.contract))

    scores = refs.similarities([card_id], embedded[2])[0]

    assert refs.vectors.shape == (len(blurred_gallery.cards), len(blurred.BLURS), 768)
    assert scores[2] > 0.999, "the same blurred view embeds to its own row"


def copy_gallery(source, target):
    target.mkdir()
    for path in source.iterdir():
        if path.is_file():
            (target / path.name).write_bytes(path.read_bytes())
    return target


def test_missing_companion_file_rejected(tiny_gallery, tmp_path):
    folder = copy_gallery(tiny_gallery, tmp_path / "gallery")
    (folder / blurred.SCALES).unlink()

    with pytest.raises(GalleryError, match="blurred_scales.npy"):
        load_gallery(folder)


def test_wrong_row_count_rejected(tiny_gallery, tmp_path):
    folder = copy_gallery(tiny_gallery, tmp_path / "gallery")
    np.save(folder / blurred.VECTORS, np.load(folder / blurred.VECTORS)[:-1])

    with pytest.raises(GalleryError, match="expected int8"):
        load_gallery(folder)


def test_other_model_rejected(tiny_gallery, tmp_path):
    folder = copy_gallery(tiny_gallery, tmp_path / "gallery")
    manifest = json.loads((folder / blurred.MANIFEST).read_text())
    (folder / blurred.MANIFEST).write_text(json.dumps({**manifest, "producer": "other-model:1"}))

    with pytest.raises(GalleryError, match="other-model:1"):
        load_gallery(folder)


def test_thresholds_file_with_pair(tmp_path):
    data = {"schema": "pokedge.thresholds/1", "match_score": 0.5, "match_margin": 0.1, "card_floor": 0.3,
            "blur_score": 0.6, "blur_margin": 0.12, "producer": "toy"}
    (tmp_path / "thresholds.json").write_text(json.dumps(data))

    thresholds = load_thresholds(tmp_path, "toy")

    assert (thresholds.blur_score, thresholds.blur_margin) == (0.6, 0.12)


def test_thresholds_pair_must_be_numbers(tmp_path):
    data = {"schema": "pokedge.thresholds/1", "match_score": 0.5, "match_margin": 0.1, "card_floor": 0.3,
            "blur_score": "high", "producer": "toy"}
    (tmp_path / "thresholds.json").write_text(json.dumps(data))

    with pytest.raises(GalleryError, match="blur_score"):
        load_thresholds(tmp_path, "toy")


def samples(rows: list[tuple[float, float, float, float, bool]]) -> Samples:
    """Samples from (score, margin, blurred score, blurred margin, correct) rows."""
    out = Samples()
    for score, margin, blur_score, blur_margin, correct in rows:
        out.scores.append(score)
        out.margins.append(margin)
        out.correct.append(correct)
        out.blur_scores.append(blur_score)
        out.blur_margins.append(blur_margin)
        out.blur_correct.append(correct)
    return out


def test_fit_places_pair_between_known_and_unknown():
    main = Thresholds(match_score=0.5, match_margin=0.1, card_floor=0.3)
    known = samples([(0.8, 0.3, 0.8, 0.3, True)] * 90 + [(0.42, 0.05, 0.7, 0.3, True)] * 10)
    unknown = samples([(0.42, 0.05, 0.5, 0.08, False)] * 100)

    report = fit_blur_check(main, known, unknown, samples([]))

    assert 0.5 < main.blur_score <= 0.7
    assert report["blur_known_correct_gained"] == 0.1
    assert report["blur_unknown_matched"] == 0.0


def test_fit_leaves_check_off_when_unknown_overlap():
    main = Thresholds(match_score=0.5, match_margin=0.1, card_floor=0.3)
    known = samples([(0.42, 0.05, 0.7, 0.3, True)] * 10)
    unknown = samples([(0.42, 0.05, 0.7, 0.3, False)] * 10)

    report = fit_blur_check(main, known, unknown, samples([]))

    assert report == {"blur_check": "off"}
    assert main.blur_score is None
