"""Tests of the synthetic scene generator, on cards drawn by make_test_card (no external data)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from pokedge import synth

CARD_W, CARD_H = 252, 352
SMALL = (32, 44)  # size of the grey thumbnails compared by normalized correlation
NON_TIGHT = [name for name in synth.CONDITIONS if name != "tight_crop"]


def _card(seed: int = 0) -> np.ndarray:
    return synth.make_test_card(np.random.default_rng(seed), CARD_W, CARD_H)


def _thumbnail(image: np.ndarray) -> np.ndarray:
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    return cv2.resize(grey, SMALL, interpolation=cv2.INTER_AREA).astype(np.float32)


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Normalized cross-correlation of two equal-size images, -1 to 1."""
    a = a - a.mean()
    b = b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def _warp_quad(frame: np.ndarray, quad: np.ndarray) -> np.ndarray:
    target = np.array([[0, 0], [CARD_W, 0], [CARD_W, CARD_H], [0, CARD_H]], np.float32)
    matrix = cv2.getPerspectiveTransform(quad.astype(np.float32), target)
    return cv2.warpPerspective(frame, matrix, (CARD_W, CARD_H), flags=cv2.INTER_LINEAR)


def _frame_area(scene: synth.Scene) -> float:
    height, width = scene.frame.shape[:2]
    return float(width * height)


def test_render_scene_reproducible():
    card = _card()
    first = synth.render_scene(card, np.random.default_rng(42))
    second = synth.render_scene(card, np.random.default_rng(42))

    assert first.conditions == second.conditions
    assert np.array_equal(first.frame, second.frame)
    assert np.array_equal(first.quads[0], second.quads[0])


def test_render_scene_differs_by_seed():
    card = _card()
    first = synth.render_scene(card, np.random.default_rng(1), ["clean"])
    second = synth.render_scene(card, np.random.default_rng(2), ["clean"])

    assert not np.array_equal(first.quads[0], second.quads[0])


@pytest.mark.parametrize("condition", synth.CONDITIONS)
def test_each_condition_renders(condition):
    scene = synth.render_scene(_card(), np.random.default_rng(7), [condition])

    assert scene.frame.dtype == np.uint8
    assert scene.frame.ndim == 3
    assert scene.frame.shape[2] == 3
    assert scene.conditions == (condition,)
    assert scene.card_indices == [0]
    assert len(scene.quads) == 1
    assert scene.quads[0].shape == (4, 2)
    assert scene.quads[0].dtype == np.float32
    assert scene.frame.std() > 5, "frame is nearly uniform"


@pytest.mark.parametrize("condition", NON_TIGHT)
def test_quads_inside_frame(condition):
    card = _card()
    for seed in range(4):
        scene = synth.render_scene(card, np.random.default_rng(seed), [condition], frame_size=(640, 480))
        quad = scene.quads[0]
        assert scene.frame.shape[:2] == (480, 640)
        assert quad.min() >= 0, f"seed {seed}: quad {quad.tolist()} leaves the frame"
        assert quad[:, 0].max() <= 640, f"seed {seed}: quad {quad.tolist()} leaves the frame on the right"
        assert quad[:, 1].max() <= 480, f"seed {seed}: quad {quad.tolist()} leaves the frame at the bottom"


def test_clean_quad_warps_to_card():
    card = _card(3)
    for seed in range(5):
        scene = synth.render_scene(card, np.random.default_rng(seed), ["clean"])
        warped = _warp_quad(scene.frame, scene.quads[0])

        score = _correlation(_thumbnail(warped), _thumbnail(card))
        assert score > 0.9, f"seed {seed}: correlation {score:.3f}"


def test_quad_matches_card_under_perspective():
    card = _card(4)
    for seed in range(5):
        scene = synth.render_scene(card, np.random.default_rng(seed), ["perspective"])
        warped = _warp_quad(scene.frame, scene.quads[0])

        score = _correlation(_thumbnail(warped), _thumbnail(card))
        assert score > 0.85, f"seed {seed}: correlation {score:.3f}"


def test_upside_down_quad_reads_upright():
    card = _card(5)
    rotated = cv2.rotate(card, cv2.ROTATE_180)
    for seed in range(5):
        scene = synth.render_scene(card, np.random.default_rng(seed), ["upside_down"])
        warped = _thumbnail(_warp_quad(scene.frame, scene.quads[0]))

        upright = _correlation(warped, _thumbnail(card))
        turned = _correlation(warped, _thumbnail(rotated))
        assert upright > 0.85, f"seed {seed}: correlation with the card {upright:.3f}"
        assert upright > turned + 0.2, f"seed {seed}: upright {upright:.3f} vs rotated {turned:.3f}"


def test_upside_down_top_left_is_lower_right():
    scene = synth.render_scene(_card(), np.random.default_rng(0), ["upside_down"])
    quad = scene.quads[0]

    assert quad[0, 1] > quad[2, 1], "the card's top-left should be below its bottom-right"
    assert quad[0, 0] > quad[2, 0], "the card's top-left should be right of its bottom-right"


def test_default_card_area_share():
    card = _card()
    for seed in range(8):
        scene = synth.render_scene(card, np.random.default_rng(seed), ["clean"])
        share = cv2.contourArea(scene.quads[0]) / _frame_area(scene)
        assert 0.1 <= share <= 0.46, f"seed {seed}: card covers {share:.3f} of the frame"


def test_small_in_frame_area_share():
    card = _card()
    for seed in range(8):
        scene = synth.render_scene(card, np.random.default_rng(seed), ["small_in_frame"])
        share = cv2.contourArea(scene.quads[0]) / _frame_area(scene)
        assert 0.025 <= share <= 0.085, f"seed {seed}: card covers {share:.3f} of the frame"


def test_tight_crop_card_fills_frame():
    card = _card()
    for seed in range(8):
        scene = synth.render_scene(card, np.random.default_rng(seed), ["tight_crop"])
        height, width = scene.frame.shape[:2]
        frame_rect = np.array([[0, 0], [width, 0], [width, height], [0, height]], np.float32)
        covered, _ = cv2.intersectConvexConvex(scene.quads[0], frame_rect)

        assert covered / (width * height) > 0.9, f"seed {seed}: card fills {covered / (width * height):.3f}"
        assert max(width, height) == 1280


def test_tight_crop_quarter_turn_is_landscape():
    scene = synth.render_scene(_card(), np.random.default_rng(0), ["tight_crop", "rotation"])
    quad = scene.quads[0]
    height, width = scene.frame.shape[:2]
    top_edge = quad[1] - quad[0]

    if abs(top_edge[0]) > abs(top_edge[1]):  # a half turn or none keeps portrait
        assert height > width
    else:
        assert width > height


def test_occlusion_hides_at_most_a_fifth():
    card = _card()
    for seed in range(8):
        scene = synth.render_scene(card, np.random.default_rng(seed), ["occlusion"])
        assert 0.0 < scene.occluded[0] <= synth.MAX_OCCLUDED_SHARE, f"seed {seed}: {scene.occluded[0]:.3f}"


def test_occlusion_draws_skin_on_card():
    card = _card()
    scene = synth.render_scene(card, np.random.default_rng(11), ["occlusion"])
    warped = _warp_quad(scene.frame, scene.quads[0])

    score = _correlation(_thumbnail(warped), _thumbnail(card))
    assert score < 0.99, "the finger did not change the card"
    assert score > 0.4, f"the card is hidden far beyond a fifth (correlation {score:.3f})"


def test_glare_saturates_part_of_card():
    card = _card()
    saturated = []
    for seed in range(6):
        scene = synth.render_scene(card, np.random.default_rng(seed), ["glare"])
        warped = _warp_quad(scene.frame, scene.quads[0])
        saturated.append(float(np.mean(warped.min(axis=2) >= 250)))
    assert max(saturated) > 0.01, f"no glare saturates: shares {saturated}"


def test_low_light_darkens_frame():
    card = _card()
    bright = synth.render_scene(card, np.random.default_rng(3), ["clean"])
    dark = synth.render_scene(card, np.random.default_rng(3), ["low_light"])

    assert dark.frame.mean() < 0.85 * bright.frame.mean()


def test_random_conditions_valid():
    rng = np.random.default_rng(0)
    for _ in range(200):
        conditions = synth.random_conditions(rng)
        assert 1 <= len(conditions) <= 3
        assert set(conditions) <= set(synth.CONDITIONS)
        assert synth.validate_conditions(conditions) == conditions


def test_random_conditions_reproducible():
    first = [synth.random_conditions(np.random.default_rng(seed)) for seed in range(20)]
    second = [synth.random_conditions(np.random.default_rng(seed)) for seed in range(20)]
    assert first == second


def test_unknown_condition_rejected():
    with pytest.raises(ValueError, match="unknown condition"):
        synth.render_scene(_card(), np.random.default_rng(0), ["fog"])


@pytest.mark.parametrize("pair", [("sleeve", "toploader"), ("rotation", "upside_down"),
                                  ("small_in_frame", "tight_crop"), ("clean", "glare")])
def test_conflicting_conditions_rejected(pair):
    with pytest.raises(ValueError):
        synth.validate_conditions(pair)


def test_condition_string_rejected():
    with pytest.raises(ValueError, match="sequence of names"):
        synth.render_scene(_card(), np.random.default_rng(0), "glare")


def test_bad_card_image_rejected():
    with pytest.raises(ValueError, match="uint8"):
        synth.render_scene(np.zeros((352, 252, 3), np.float32), np.random.default_rng(0))


@pytest.mark.parametrize("rows,cols", [(2, 2), (3, 3)])
def test_binder_quads_do_not_overlap(rows, cols):
    cards = [_card(seed) for seed in range(rows * cols)]
    scene = synth.render_binder(cards, np.random.default_rng(rows), rows, cols)

    assert len(scene.quads) == rows * cols
    assert scene.card_indices == list(range(rows * cols))
    for i, first in enumerate(scene.quads):
        for j in range(i + 1, len(scene.quads)):
            overlap, _ = cv2.intersectConvexConvex(first, scene.quads[j])
            assert overlap < 1.0, f"quads {i} and {j} overlap by {overlap:.1f} px^2"


@pytest.mark.parametrize("rows,cols", [(2, 2), (3, 3)])
def test_binder_quads_inside_frame_and_match(rows, cols):
    cards = [_card(seed) for seed in range(rows * cols)]
    scene = synth.render_binder(cards, np.random.default_rng(10 + rows), rows, cols, sleeves=True)
    height, width = scene.frame.shape[:2]

    for index, quad in zip(scene.card_indices, scene.quads):
        assert quad.min() >= 0, f"pocket {index}: quad {quad.tolist()} leaves the frame"
        assert quad[:, 0].max() <= width, f"pocket {index}: quad {quad.tolist()} leaves the frame"
        assert quad[:, 1].max() <= height, f"pocket {index}: quad {quad.tolist()} leaves the frame"
        score = _correlation(_thumbnail(_warp_quad(scene.frame, quad)), _thumbnail(cards[index]))
        assert score > 0.8, f"pocket {index}: correlation {score:.3f}"


def test_binder_repeats_cards_when_short():
    scene = synth.render_binder([_card(0), _card(1)], np.random.default_rng(0), 3, 3, sleeves=False)

    assert scene.card_indices == [0, 1, 0, 1, 0, 1, 0, 1, 0]
    assert "sleeve" not in scene.conditions


def test_binder_rejects_unsupported_condition():
    with pytest.raises(ValueError, match="does not support"):
        synth.render_binder([_card()], np.random.default_rng(0), 2, 2, conditions=["toploader"])


@pytest.mark.parametrize("kind", synth.BACKGROUND_KINDS)
def test_background_kinds_render(kind):
    background = synth.render_background(np.random.default_rng(0), (320, 240), kind)

    assert background.shape == (240, 320, 3)
    assert background.dtype == np.uint8


def test_dark_background_is_dark():
    background = synth.render_background(np.random.default_rng(0), (320, 240), "dark")
    assert background.mean() < 45


def test_card_coloured_background_is_yellow():
    background = synth.render_background(np.random.default_rng(0), (320, 240), "card_colored")
    hue = cv2.cvtColor(background, cv2.COLOR_BGR2HSV)[..., 0]
    assert 15 <= np.median(hue) <= 35, f"median OpenCV hue {np.median(hue)} is not yellow"


def test_unknown_background_rejected():
    with pytest.raises(ValueError, match="unknown background kind"):
        synth.render_background(np.random.default_rng(0), (320, 240), "marble")


def test_tiny_frame_size_rejected():
    with pytest.raises(ValueError, match="frame size"):
        synth.render_scene(_card(), np.random.default_rng(0), ["clean"], frame_size=(32, 24))


def test_make_test_card_shape_and_asymmetry():
    card = synth.make_test_card(np.random.default_rng(0), 126, 176)

    assert card.shape == (176, 126, 3)
    assert card.dtype == np.uint8
    assert _correlation(_thumbnail(card), _thumbnail(cv2.rotate(card, cv2.ROTATE_180))) < 0.7
