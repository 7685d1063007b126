"""Synthetic camera frames of Pokemon cards with ground-truth quads.

`render_scene` photographs one reference scan under chosen conditions (pose,
background, sleeve or toploader, glare, a finger, camera faults), and
`render_binder` does the same for a 2x2 or 3x3 binder page. Both return the
frame with each card's quad, so detection and recognition can be scored per
condition without real photos. Every random choice comes from the numpy
Generator passed in, so the same seed gives the same frame.

Lengths on the card plane are in millimetres: a card is 63 x 88 mm with
rounded corners. Frame and image sizes are (width, height) in pixels, and
images are BGR uint8.
"""

from __future__ import annotations

import math
import string
from dataclasses import dataclass, field
from typing import Sequence

import cv2
import numpy as np

CONDITIONS = ("clean", "perspective", "rotation", "upside_down", "busy_bg", "dark_bg", "card_colored_bg",
              "glare", "blur", "motion_blur", "noise", "jpeg", "low_light", "sleeve", "toploader",
              "occlusion", "small_in_frame", "tight_crop")

# At most one condition of each group applies to a scene.
EXCLUSIVE_GROUPS = (
    ("busy_bg", "dark_bg", "card_colored_bg"),
    ("rotation", "upside_down"),
    ("sleeve", "toploader"),
    ("small_in_frame", "tight_crop"),
)

BACKGROUND_KINDS = ("wood", "fabric", "paper", "gradient", "noise", "clutter", "dark", "card_colored")
# Backgrounds for a scene without a background condition: plain desk surfaces.
PLAIN_BACKGROUND_KINDS = ("wood", "fabric", "paper", "gradient")

CARD_WIDTH_MM = 63.0
CARD_HEIGHT_MM = 88.0
CARD_CORNER_RADIUS_MM = 3.0
TOPLOADER_SIZE_MM = (76.2, 101.6)  # outer size of a 3 x 4 inch toploader
# A 9-pocket binder page (8.5 x 11 in) has 3 x 3 pockets of about 66 x 91 mm
# between welded seams. A 4-pocket page uses the same pocket size.
BINDER_POCKET_PITCH_MM = (68.5, 93.5)
BINDER_SEAM_MM = 2.5

# Card area as a share of the frame area.
DEFAULT_CARD_AREA = (0.15, 0.45)
SMALL_CARD_AREA = (0.03, 0.08)
TIGHT_CROP_MIN_FILL = 0.9
MAX_OCCLUDED_SHARE = 0.2

# Skin tones (BGR) from light to dark; a finger takes a random blend of two neighbours.
_SKIN_TONES_BGR = np.array([(180, 200, 240), (150, 180, 228), (110, 150, 205), (70, 115, 170), (45, 75, 120)],
                           dtype=np.float32)
_CARD_YELLOW_BGR = (40, 205, 240)


@dataclass
class Scene:
    """A rendered frame and the ground truth of every card in it."""

    frame: np.ndarray  # BGR uint8
    # Per card: float32 [4, 2] frame pixels, ordered TL, TR, BR, BL of the card
    # as it reads upright, so an upside-down card has TL at the visual bottom-right.
    quads: list[np.ndarray]
    card_indices: list[int]  # index into the input cards, in the order of `quads`
    conditions: tuple[str, ...]
    # Per card: share of the card's area in the frame hidden by a finger (0 to 1).
    occluded: list[float] = field(default_factory=list)
    background: str = ""  # background kind, one of BACKGROUND_KINDS


@dataclass
class _Pose:
    """Camera pose relative to the card plane."""

    angle_deg: float  # in-plane rotation, clockwise in the image
    tilt_deg: float  # angle between the card normal and the optical axis
    tilt_axis_deg: float  # direction of the tilt axis in the card plane
    hfov_deg: float  # horizontal field of view of the camera


@dataclass
class _Holder:
    """Outline of what is warped into the frame, in card-plane mm with the card centre at 0."""

    kind: str  # "none", "sleeve" or "toploader"
    x0: float
    y0: float
    x1: float
    y1: float
    inner_sleeve: bool = False  # a toploader holding a sleeved card


# ---------------------------------------------------------------------------
# Conditions


def validate_conditions(conditions: Sequence[str]) -> tuple[str, ...]:
    """Return the conditions in CONDITIONS order, ("clean",) when empty; raise ValueError for unknown or
    conflicting ones."""
    if isinstance(conditions, str):
        raise ValueError(f"conditions must be a sequence of names, got the string {conditions!r}; "
                         f"pass [{conditions!r}] instead")
    unknown = [name for name in conditions if name not in CONDITIONS]
    if unknown:
        raise ValueError(f"unknown condition(s) {unknown}; expected names from {CONDITIONS}")

    chosen = set(conditions)
    if "clean" in chosen and len(chosen) > 1:
        raise ValueError(f"'clean' cannot be combined with other conditions, got {sorted(chosen)}")
    for group in EXCLUSIVE_GROUPS:
        clash = [name for name in group if name in chosen]
        if len(clash) > 1:
            raise ValueError(f"conditions {clash} exclude each other; pick one of {group}")

    return tuple(name for name in CONDITIONS if name in chosen) or ("clean",)


def random_conditions(rng: np.random.Generator) -> tuple[str, ...]:
    """Draw a compatible mix of 1 to 3 conditions (about 1 in 10 draws is "clean" alone)."""
    if rng.random() < 0.1:
        return ("clean",)

    count = int(rng.choice([1, 2, 3], p=[0.45, 0.35, 0.2]))
    pool = [name for name in CONDITIONS if name != "clean"]
    chosen: list[str] = []
    for index in rng.permutation(len(pool)):
        name = pool[int(index)]
        if _compatible(chosen, name):
            chosen.append(name)
        if len(chosen) == count:
            break

    return validate_conditions(chosen)


def _compatible(chosen: list[str], name: str) -> bool:
    for group in EXCLUSIVE_GROUPS:
        if name in group and any(other in group for other in chosen):
            return False
    return True


# ---------------------------------------------------------------------------
# Test card


def make_test_card(rng: np.random.Generator, width: int = 252, height: int = 352) -> np.ndarray:
    """Draw a card-like BGR uint8 image: yellow border, name line, coloured art box and text strokes.

    The layout is top-heavy like a real card, so the card and its 180-degree
    rotation differ clearly. Sizes scale with `width` and `height` (pixels,
    at least 32 each).
    """
    if width < 32 or height < 32:
        raise ValueError(f"test card size must be at least 32 x 32 px, got {width} x {height}")

    card = np.empty((height, width, 3), np.uint8)
    card[:] = _jitter_colour(rng, _CARD_YELLOW_BGR, 18)

    border = max(2, round(0.045 * width))
    panel = _jitter_colour(rng, rng.integers(120, 250, 3), 0)
    cv2.rectangle(card, (border, border), (width - 1 - border, height - 1 - border), panel, -1)

    _draw_name_line(card, rng, border)
    _draw_art_box(card, rng, border)
    _draw_text_lines(card, rng, border, top=round(0.56 * height), bottom=round(0.9 * height))

    return card


def _draw_name_line(card: np.ndarray, rng: np.random.Generator, border: int) -> None:
    height, width = card.shape[:2]
    scale = height / 352
    baseline = border + round(22 * scale)
    cv2.putText(card, _random_word(rng, 5, 10), (border + round(6 * scale), baseline), cv2.FONT_HERSHEY_DUPLEX,
                0.62 * scale, (20, 20, 20), max(1, round(scale)), cv2.LINE_AA)
    cv2.putText(card, f"{int(rng.integers(4, 13)) * 10} HP", (width - border - round(62 * scale), baseline),
                cv2.FONT_HERSHEY_SIMPLEX, 0.5 * scale, (30, 30, 200), max(1, round(scale)), cv2.LINE_AA)


def _draw_art_box(card: np.ndarray, rng: np.random.Generator, border: int) -> None:
    height, width = card.shape[:2]
    x0, x1 = round(1.6 * border), width - round(1.6 * border)
    y0, y1 = round(0.11 * height), round(0.5 * height)

    top, bottom = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    ramp = np.linspace(0, 1, y1 - y0, dtype=np.float32)[:, None, None]
    card[y0:y1, x0:x1] = (top * (1 - ramp) + bottom * ramp).astype(np.uint8)

    art = card[y0:y1, x0:x1]
    for _ in range(int(rng.integers(4, 9))):
        centre = (int(rng.integers(0, x1 - x0)), int(rng.integers(0, y1 - y0)))
        colour = [int(c) for c in rng.integers(0, 256, 3)]
        if rng.random() < 0.5:
            cv2.circle(art, centre, int(rng.integers(6, (x1 - x0) // 3)), colour, -1, cv2.LINE_AA)
        else:
            points = rng.integers(0, [x1 - x0, y1 - y0], size=(int(rng.integers(3, 6)), 2)).astype(np.int32)
            cv2.fillPoly(art, [points], colour, cv2.LINE_AA)

    cv2.rectangle(card, (x0, y0), (x1 - 1, y1 - 1), (60, 120, 160), max(1, border // 4))


def _draw_text_lines(card: np.ndarray, rng: np.random.Generator, border: int, top: int, bottom: int) -> None:
    height = card.shape[0]
    scale = height / 352
    y = top
    while y < bottom:
        words = " ".join(_random_word(rng, 2, 8) for _ in range(int(rng.integers(2, 5))))
        font_scale = float(rng.uniform(0.38, 0.55)) * scale
        cv2.putText(card, words, (border + round(8 * scale), y), cv2.FONT_HERSHEY_SIMPLEX, font_scale,
                    (25, 25, 25), max(1, round(scale)), cv2.LINE_AA)
        y += round(float(rng.uniform(16, 30)) * scale)


def _random_word(rng: np.random.Generator, min_len: int, max_len: int) -> str:
    letters = rng.choice(list(string.ascii_letters), size=int(rng.integers(min_len, max_len + 1)))
    return "".join(letters)


def _jitter_colour(rng: np.random.Generator, colour, spread: float) -> tuple[int, int, int]:
    jittered = np.clip(np.asarray(colour, np.float32) + rng.uniform(-spread, spread, 3), 0, 255)
    return tuple(int(c) for c in jittered)


# ---------------------------------------------------------------------------
# Backgrounds


def render_background(rng: np.random.Generator, size: tuple[int, int], kind: str = "random") -> np.ndarray:
    """Render a procedural background of `size` (width, height) pixels as BGR uint8.

    `kind` is one of BACKGROUND_KINDS or "random". "card_colored" is yellow
    like card borders and may contain card-sized yellow rectangles, a hard
    case for detectors that look for the yellow border.
    """
    _check_frame_size(size)
    if kind == "random":
        kind = str(rng.choice(BACKGROUND_KINDS))
    if kind not in BACKGROUND_KINDS:
        raise ValueError(f"unknown background kind {kind!r}; expected 'random' or one of {BACKGROUND_KINDS}")

    width, height = size
    return _BACKGROUND_RENDERERS[kind](rng, width, height)


def _check_frame_size(size) -> None:
    if len(size) != 2 or min(int(size[0]), int(size[1])) < 64:
        raise ValueError(f"frame size must be (width, height) with both at least 64 px, got {size}")


def _value_noise(rng: np.random.Generator, width: int, height: int, cell_px: float, octaves: int = 3) -> np.ndarray:
    """Draw a smooth random field in [0, 1], float32 [height, width], with features about `cell_px` wide."""
    total = np.zeros((height, width), np.float32)
    weight_sum = 0.0
    for octave in range(octaves):
        cell = max(cell_px / 2 ** octave, 1.0)
        grid = rng.random((int(height / cell) + 2, int(width / cell) + 2), dtype=np.float32)
        weight = 0.5 ** octave
        total += weight * cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)
        weight_sum += weight
    total /= weight_sum
    return np.clip(total, 0, 1)


def _colourize(field01: np.ndarray, low, high) -> np.ndarray:
    """Map a [0, 1] field to BGR uint8 between two colours."""
    low = np.asarray(low, np.float32)
    high = np.asarray(high, np.float32)
    return _to_uint8(low + field01[..., None] * (high - low) + 0.5)


def _upscale(image: np.ndarray, width: int, height: int) -> np.ndarray:
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(image, 0, 255).astype(np.uint8)


def _wood(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Render planks with wavy grain lines, turned by 90 degrees half the time."""
    if rng.random() < 0.5:
        return cv2.rotate(_wood_planks(rng, height, width), cv2.ROTATE_90_CLOCKWISE)
    return _wood_planks(rng, width, height)


def _wood_planks(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    # The grain runs along x, so the field is computed at a quarter of the resolution along x and half
    # along y, then stretched. Lengths below are in those half-resolution rows.
    columns, rows = max(width // 4, 2), max(height // 2, 2)
    period = rng.uniform(4, 11)
    warp = _value_noise(rng, columns, rows, cell_px=rng.uniform(20, 45), octaves=2)
    ys = np.arange(rows, dtype=np.float32)[:, None]

    plank_of_row = np.cumsum(rng.random(rows) < 1 / rng.uniform(75, 160))
    plank_phase = rng.uniform(0, 10, plank_of_row[-1] + 1).astype(np.float32)[plank_of_row][:, None]
    plank_tone = rng.uniform(0.85, 1.12, plank_of_row[-1] + 1).astype(np.float32)[plank_of_row][:, None]

    phase = ys / period + rng.uniform(1.5, 4) * warp + plank_phase
    grain = (0.5 + 0.5 * np.sin(2 * np.pi * phase)) ** rng.uniform(3, 8)
    fibres = cv2.GaussianBlur(rng.random((rows, 1), dtype=np.float32), (0, 0), 0.8)
    shade = (1 - 0.45 * grain) * (0.9 + 0.15 * fibres) * plank_tone
    seams = np.flatnonzero(np.diff(plank_of_row))
    shade[seams] *= 0.5

    tone = rng.uniform(0.55, 1.25)
    light = np.array([125, 175, 220], np.float32) * tone
    return _upscale(_colourize(np.clip(shade, 0, 1.3) / 1.3, light * 0.35, light), width, height)


def _fabric(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Render a plain weave (warp and weft threads 3-6 px wide) with soft folds."""
    period = int(rng.integers(3, 7))
    ramp = np.sin(np.pi * (np.arange(period, dtype=np.float32) + 0.5) / period)
    warp_threads = np.tile(ramp[None, :], (period, 1))
    tile = np.block([[warp_threads, warp_threads.T], [warp_threads.T, warp_threads]])
    weave = np.tile(tile, (height // tile.shape[0] + 1, width // tile.shape[1] + 1))[:height, :width]
    weave = _to_uint8(255 * (0.78 + 0.22 * weave))

    low_w, low_h = max(width // 8, 2), max(height // 8, 2)
    folds = 0.75 + 0.35 * _value_noise(rng, low_w, low_h, cell_px=rng.uniform(10, 30))
    colour = rng.uniform(40, 230, 3).astype(np.float32)
    shaded = _upscale(_to_uint8(folds[..., None] * colour), width, height)
    return cv2.multiply(shaded, cv2.merge([weave, weave, weave]), scale=1 / 255)


def _paper(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Render plain paper or card stock, white-ish or kraft, with faint uneven lighting."""
    tint = _jitter_colour(rng, (225, 228, 230), 25) if rng.random() < 0.8 else _jitter_colour(rng, (120, 160, 190), 20)
    low_w, low_h = max(width // 16, 2), max(height // 16, 2)
    shading = 0.88 + 0.12 * _value_noise(rng, low_w, low_h, cell_px=8, octaves=2)
    return _upscale(_to_uint8(shading[..., None] * np.asarray(tint, np.float32)), width, height)


def _gradient(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    low_w, low_h = max(width // 16, 2), max(height // 16, 2)
    xs = np.linspace(-1, 1, low_w, dtype=np.float32)[None, :]
    ys = np.linspace(-1, 1, low_h, dtype=np.float32)[:, None]
    if rng.random() < 0.5:
        angle = rng.uniform(0, 2 * np.pi)
        ramp = (xs * np.cos(angle) + ys * np.sin(angle)) * 0.5 + 0.5
    else:
        cx, cy = rng.uniform(-0.6, 0.6, 2)
        ramp = np.sqrt((xs - cx) ** 2 + (ys - cy) ** 2) / 2
    ramp = np.clip(ramp, 0, 1).astype(np.float32)
    colours = rng.uniform(20, 240, (2, 3))
    return _upscale(_colourize(ramp, colours[0], colours[1]), width, height)


def _speckle(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Render multi-coloured grainy noise, like granite, carpet or a printed playmat."""
    half_w, half_h = max(width // 2, 2), max(height // 2, 2)
    channels = [_value_noise(rng, half_w, half_h, cell_px=rng.uniform(3, 12), octaves=2) for _ in range(3)]
    field = np.stack(channels, axis=-1)
    base = rng.uniform(40, 200, 3).astype(np.float32)
    contrast = rng.uniform(60, 180)
    return _upscale(_to_uint8(base + (field - 0.5) * contrast), width, height)


def _clutter(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    base_kind = str(rng.choice(("wood", "fabric", "paper", "gradient", "noise")))
    image = _BACKGROUND_RENDERERS[base_kind](rng, width, height)
    scale = math.hypot(width, height) / 1600

    for _ in range(int(rng.integers(12, 30))):
        _draw_random_shape(image, rng, scale)
    for _ in range(int(rng.integers(2, 5))):
        _draw_text_sheet(image, rng, scale)
    for _ in range(int(rng.integers(6, 16))):
        _draw_loose_text(image, rng, scale)

    return image


def _draw_random_shape(image: np.ndarray, rng: np.random.Generator, scale: float) -> None:
    height, width = image.shape[:2]
    colour = [int(c) for c in rng.integers(0, 256, 3)]
    centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
    size = float(rng.uniform(15, 160)) * scale
    shape = rng.integers(0, 4)
    if shape == 0:
        box = cv2.boxPoints((centre, (size, size * rng.uniform(0.3, 2)), rng.uniform(0, 180)))
        cv2.fillPoly(image, [box.astype(np.int32)], colour, cv2.LINE_AA)
    elif shape == 1:
        cv2.circle(image, centre, int(size / 2), colour, -1 if rng.random() < 0.6 else max(1, int(4 * scale)),
                   cv2.LINE_AA)
    elif shape == 2:
        end = (centre[0] + int(rng.normal(0, 2 * size)), centre[1] + int(rng.normal(0, 2 * size)))
        cv2.line(image, centre, end, colour, max(1, int(rng.uniform(1, 10) * scale)), cv2.LINE_AA)
    else:
        points = (np.array(centre) + rng.normal(0, size / 2, (int(rng.integers(3, 7)), 2))).astype(np.int32)
        cv2.fillPoly(image, [points], colour, cv2.LINE_AA)


def _draw_text_sheet(image: np.ndarray, rng: np.random.Generator, scale: float) -> None:
    """Draw a rotated sheet of paper covered with lines of text-like strokes."""
    height, width = image.shape[:2]
    sheet_w, sheet_h = rng.uniform(150, 400) * scale, rng.uniform(150, 450) * scale
    centre = (float(rng.uniform(0, width)), float(rng.uniform(0, height)))
    angle = float(rng.uniform(-40, 40))
    corners = cv2.boxPoints((centre, (sheet_w, sheet_h), angle))
    cv2.fillPoly(image, [corners.astype(np.int32)], _jitter_colour(rng, (235, 235, 235), 15), cv2.LINE_AA)

    to_frame = cv2.getRotationMatrix2D((0, 0), -angle, 1.0)
    line_gap = rng.uniform(12, 24) * scale
    ink = [int(c) for c in rng.integers(0, 90, 3)]
    y = -sheet_h / 2 + line_gap
    while y < sheet_h / 2 - line_gap / 2:
        x = -sheet_w / 2 + 0.1 * sheet_w
        while x < sheet_w * 0.4:
            word = rng.uniform(10, 45) * scale
            start = to_frame[:, :2] @ (x, y) + centre
            end = to_frame[:, :2] @ (min(x + word, sheet_w * 0.4), y) + centre
            cv2.line(image, _point(start), _point(end), ink, max(1, int(line_gap / 3.5)), cv2.LINE_AA)
            x += word + rng.uniform(5, 12) * scale
        y += line_gap


def _draw_loose_text(image: np.ndarray, rng: np.random.Generator, scale: float) -> None:
    height, width = image.shape[:2]
    origin = (int(rng.integers(0, width)), int(rng.integers(0, height)))
    colour = [int(c) for c in rng.integers(0, 256, 3)]
    font = int(rng.choice([cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_COMPLEX]))
    size = float(rng.uniform(0.6, 2.2)) * scale
    cv2.putText(image, _random_word(rng, 3, 10), origin, font, size, colour, max(1, int(2 * size)), cv2.LINE_AA)


def _dark(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Render a dark cloth, mat or desk: a texture scaled to a mean level of 10-35."""
    texture_kind = str(rng.choice(("fabric", "noise", "paper")))
    texture = _BACKGROUND_RENDERERS[texture_kind](rng, width, height)
    level = rng.uniform(10, 35)
    return cv2.convertScaleAbs(texture, alpha=level / max(float(np.mean(cv2.mean(texture)[:3])), 1.0))


def _card_coloured(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Render a yellow surface of the card-border hue, sometimes with card-sized yellow rectangles on it."""
    texture_kind = str(rng.choice(("fabric", "paper", "gradient")))
    texture = cv2.cvtColor(_BACKGROUND_RENDERERS[texture_kind](rng, width, height), cv2.COLOR_BGR2GRAY)
    yellow = np.asarray(_jitter_colour(rng, _CARD_YELLOW_BGR, 25), np.float32)
    levels = 0.8 + 0.3 * np.arange(256, dtype=np.float32)[:, None] / 255
    lut = _to_uint8(levels * yellow + 0.5).reshape(256, 1, 3)
    image = cv2.LUT(cv2.merge([texture, texture, texture]), lut)

    if rng.random() < 0.6:
        scale = math.hypot(width, height) / 1600
        for _ in range(int(rng.integers(2, 6))):
            _draw_yellow_card_shape(image, rng, scale)
    return image


def _draw_yellow_card_shape(image: np.ndarray, rng: np.random.Generator, scale: float) -> None:
    """Draw a card-sized yellow rectangle with a darker outline, a decoy for border-based detectors."""
    height, width = image.shape[:2]
    card_w = rng.uniform(120, 320) * scale
    box = ((float(rng.uniform(0, width)), float(rng.uniform(0, height))), (card_w, card_w * 88 / 63),
           float(rng.uniform(0, 180)))
    corners = cv2.boxPoints(box).astype(np.int32)
    cv2.fillPoly(image, [corners], _jitter_colour(rng, (60, 190, 230), 30), cv2.LINE_AA)
    cv2.polylines(image, [corners], True, _jitter_colour(rng, (30, 150, 200), 30), max(1, int(6 * scale)),
                  cv2.LINE_AA)


_BACKGROUND_RENDERERS = {
    "wood": _wood,
    "fabric": _fabric,
    "paper": _paper,
    "gradient": _gradient,
    "noise": _speckle,
    "clutter": _clutter,
    "dark": _dark,
    "card_colored": _card_coloured,
}


def _point(xy) -> tuple[int, int]:
    return int(round(float(xy[0]))), int(round(float(xy[1])))


# ---------------------------------------------------------------------------
# Geometry


def _card_corners_mm() -> np.ndarray:
    """Return the card corners TL, TR, BR, BL in card-plane mm, card centre at 0, y down."""
    half_w, half_h = CARD_WIDTH_MM / 2, CARD_HEIGHT_MM / 2
    return np.array([[-half_w, -half_h], [half_w, -half_h], [half_w, half_h], [-half_w, half_h]], np.float32)


def _rect_corners(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float32)


def _transform(points: np.ndarray, homography: np.ndarray) -> np.ndarray:
    return cv2.perspectiveTransform(points.reshape(-1, 1, 2).astype(np.float32), homography).reshape(-1, 2)


def _polygon_area(points: np.ndarray) -> float:
    return float(abs(cv2.contourArea(points.astype(np.float32))))


def _sample_pose(rng: np.random.Generator, chosen: set[str]) -> _Pose:
    """Draw a camera pose; a tight crop keeps the card square to the frame so it can fill it."""
    tight = "tight_crop" in chosen
    jitter = 1.5 if tight else 8.0

    if "rotation" in chosen:
        angle = 90.0 * int(rng.integers(0, 4)) + rng.uniform(-jitter, jitter) if tight else rng.uniform(0, 360)
    elif "upside_down" in chosen:
        angle = 180.0 + (rng.uniform(-jitter, jitter) if tight else rng.uniform(-15, 15))
    else:
        angle = rng.uniform(-jitter, jitter)

    if "perspective" in chosen:
        tilt = rng.uniform(4, 8) if tight else rng.uniform(15, 35)
    else:
        tilt = rng.uniform(0, 3) if tight else rng.uniform(0, 8)

    return _Pose(float(angle), float(tilt), float(rng.uniform(0, 360)), float(rng.uniform(55, 75)))


def _plane_homography(pose: _Pose, plane_corners_mm: np.ndarray, frame_width: int,
                      target_height_px: float) -> np.ndarray:
    """Build the homography from plane mm to image pixels (principal point at 0) of a pinhole camera.

    The camera distance makes the plane about `target_height_px` tall, so the
    perspective is as strong as for a phone (55-75 degree field of view) at
    that distance.
    """
    focal_px = frame_width / (2 * math.tan(math.radians(pose.hfov_deg) / 2))
    plane_height_mm = float(np.ptp(plane_corners_mm[:, 1]))
    distance_mm = focal_px * plane_height_mm / target_height_px

    angle = math.radians(pose.angle_deg)
    in_plane = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]], np.float32)
    points = plane_corners_mm @ in_plane.T

    axis = math.radians(pose.tilt_axis_deg)
    rotation_vector = np.array([math.cos(axis), math.sin(axis), 0.0]) * math.radians(pose.tilt_deg)
    rotation, _ = cv2.Rodrigues(rotation_vector)
    points_3d = np.c_[points, np.zeros(len(points))] @ rotation.T
    points_3d[:, 2] += distance_mm
    projected = focal_px * points_3d[:, :2] / points_3d[:, 2:3]

    return cv2.getPerspectiveTransform(plane_corners_mm.astype(np.float32), projected.astype(np.float32))


def _scale_shift(scale: float, shift) -> np.ndarray:
    return np.array([[scale, 0, shift[0]], [0, scale, shift[1]], [0, 0, 1]], np.float64)


def _place_in_frame(rng: np.random.Generator, h_image: np.ndarray, subject_mm: np.ndarray, outline_mm: np.ndarray,
                    area_share: float, frame_size: tuple[int, int]) -> np.ndarray:
    """Scale and shift `h_image` so the subject covers `area_share` of the frame and the outline fits inside.

    The share is lowered when the outline would not fit at that size (large,
    rotated cards in toploaders), so it is a target, not a promise.
    """
    width, height = frame_size
    margin = 0.02 * min(width, height)
    subject = _transform(subject_mm, h_image)
    outline = _transform(outline_mm, h_image)

    span = outline.max(axis=0) - outline.min(axis=0)
    fit_scale = min((width - 2 * margin) / span[0], (height - 2 * margin) / span[1])
    scale = min(math.sqrt(area_share * width * height / _polygon_area(subject)), fit_scale)

    low = margin - scale * outline.min(axis=0)
    high = np.array([width, height]) - margin - scale * outline.max(axis=0)
    shift = rng.uniform(low, np.maximum(high, low))
    return _scale_shift(scale, shift) @ h_image


def _place_tight(rng: np.random.Generator, h_image: np.ndarray, pose: _Pose,
                 long_side_px: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Fit the frame around the card like a scan: return (homography, frame size) with the card filling >= 90%.

    The frame takes the card's orientation (portrait, or landscape for a
    quarter turn), its long side is `long_side_px`, and each side is 97-103%
    of the card's, so corners may be cut off by up to 1.5% of a side.
    """
    quad = _transform(_card_corners_mm(), h_image)
    card_w = (np.linalg.norm(quad[1] - quad[0]) + np.linalg.norm(quad[2] - quad[3])) / 2
    card_h = (np.linalg.norm(quad[3] - quad[0]) + np.linalg.norm(quad[2] - quad[1])) / 2
    if round(pose.angle_deg / 90) % 2 == 1:
        card_w, card_h = card_h, card_w

    for _ in range(20):
        frame_w, frame_h = card_w * rng.uniform(0.97, 1.03), card_h * rng.uniform(0.97, 1.03)
        scale = long_side_px / max(frame_w, frame_h)
        frame_size = (round(frame_w * scale), round(frame_h * scale))
        target_centre = np.array(frame_size) * (0.5 + rng.uniform(-0.01, 0.01, 2))
        homography = _scale_shift(scale, target_centre - scale * quad.mean(axis=0)) @ h_image
        if _fill_share(_transform(_card_corners_mm(), homography), frame_size) >= TIGHT_CROP_MIN_FILL + 0.01:
            break
    return homography, frame_size


def _fill_share(quad: np.ndarray, frame_size: tuple[int, int]) -> float:
    """Return the share of the frame area covered by the card quad."""
    width, height = frame_size
    frame_rect = _rect_corners(0, 0, width, height)
    area, _ = cv2.intersectConvexConvex(quad.astype(np.float32), frame_rect)
    return float(area) / (width * height)


def _pixels_per_mm(homography: np.ndarray, outline_mm: np.ndarray) -> float:
    """Return the largest scale (frame px per plane mm) along the outline's edges."""
    outline = _transform(outline_mm, homography)
    px = np.linalg.norm(np.roll(outline, -1, axis=0) - outline, axis=1)
    mm = np.linalg.norm(np.roll(outline_mm, -1, axis=0) - outline_mm, axis=1)
    return float(np.max(px / mm))


def _bounding_box(points: np.ndarray, frame_shape, pad: float = 2) -> tuple[int, int, int, int] | None:
    """Return the integer box (x0, y0, x1, y1) around points, clipped to the frame, or None when empty."""
    height, width = frame_shape[:2]
    x0, y0 = np.floor(points.min(axis=0) - pad).astype(int)
    x1, y1 = np.ceil(points.max(axis=0) + pad).astype(int)
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    if x1 <= x0 or y1 <= y0:
        return None
    return int(x0), int(y0), int(x1), int(y1)


# ---------------------------------------------------------------------------
# Layers: premultiplied BGRA images on the card plane, warped into the frame


@dataclass
class _LayerGrid:
    """Pixel grid of a layer: plane mm to layer pixels, with one anchor rectangle on whole pixels."""

    width: int
    height: int
    anchor_box: tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive) of the anchor in layer pixels
    mm_to_px: np.ndarray  # 3x3 affine, plane mm to layer pixel coordinates

    def points(self, points_mm: np.ndarray) -> np.ndarray:
        return _transform(points_mm, self.mm_to_px)

    def length(self, mm: float) -> float:
        return mm * self.mm_to_px[0, 0]


def _layer_grid(anchor_mm, extent_mm, px_per_mm: float, pad: int = 3) -> _LayerGrid:
    """Build a grid that covers the `extent_mm` rectangle and puts the `anchor_mm` rectangle (the card or the
    page) on whole pixels. Rectangles are (x0, y0, x1, y1) in plane mm."""
    ax0, ay0, ax1, ay1 = anchor_mm
    ex0, ey0, ex1, ey1 = extent_mm
    anchor_w = max(round((ax1 - ax0) * px_per_mm), 8)
    anchor_h = max(round((ay1 - ay0) * px_per_mm), 8)
    scale_x, scale_y = anchor_w / (ax1 - ax0), anchor_h / (ay1 - ay0)
    left = pad + math.ceil((ax0 - ex0) * scale_x)
    top = pad + math.ceil((ay0 - ey0) * scale_y)
    width = left + math.ceil((ex1 - ax0) * scale_x) + pad
    height = top + math.ceil((ey1 - ay0) * scale_y) + pad

    # Pixel centres sit on integer coordinates, so the anchor's outer edge is half a pixel out.
    mm_to_px = np.array([[scale_x, 0, left - 0.5 - ax0 * scale_x],
                         [0, scale_y, top - 0.5 - ay0 * scale_y],
                         [0, 0, 1]], np.float64)
    return _LayerGrid(width, height, (left, top, left + anchor_w, top + anchor_h), mm_to_px)


def _rounded_rect_mask(width: int, height: int, box, radius: float) -> np.ndarray:
    """Draw a uint8 mask [height, width] of an anti-aliased rounded rectangle.

    `box` is x0, y0, x1, y1 in pixels, x1 and y1 exclusive.
    """
    mask = np.zeros((height, width), np.uint8)
    x0, y0, x1, y1 = box
    r = max(int(round(radius)), 1)
    cv2.rectangle(mask, (x0 + r, y0), (x1 - 1 - r, y1 - 1), 255, -1)
    cv2.rectangle(mask, (x0, y0 + r), (x1 - 1, y1 - 1 - r), 255, -1)
    for cx, cy in ((x0 + r, y0 + r), (x1 - 1 - r, y0 + r), (x1 - 1 - r, y1 - 1 - r), (x0 + r, y1 - 1 - r)):
        cv2.circle(mask, (cx, cy), r, 255, -1, cv2.LINE_AA)
    return mask


def _premultiply(bgr: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Merge BGR and alpha into BGRA uint8 with colour premultiplied by alpha, so warping blends edges without
    dark fringes."""
    colour = cv2.multiply(bgr, cv2.merge([alpha, alpha, alpha]), scale=1 / 255)
    return cv2.merge([colour, alpha])


def _card_layer(card_bgr: np.ndarray, grid: _LayerGrid) -> np.ndarray:
    x0, y0, x1, y1 = grid.anchor_box
    card_w, card_h = x1 - x0, y1 - y0
    # NOTE: a scan smaller than the card in the frame is enlarged here, so frames made from small scans
    # (such as 240 x 330 gallery images) are softer than photos of a real card at the same size.
    shrinking = card_w < card_bgr.shape[1]
    card = cv2.resize(card_bgr, (card_w, card_h), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)

    bgr = np.zeros((grid.height, grid.width, 3), np.uint8)
    bgr[y0:y1, x0:x1] = card
    alpha = _rounded_rect_mask(grid.width, grid.height, grid.anchor_box, grid.length(CARD_CORNER_RADIUS_MM))
    return _premultiply(bgr, alpha)


def _composite_layer(frame: np.ndarray, layer: np.ndarray, layer_to_frame: np.ndarray) -> None:
    """Warp a premultiplied BGRA layer into the frame and blend it over, in place."""
    height, width = layer.shape[:2]
    corners = _transform(_rect_corners(-0.5, -0.5, width - 0.5, height - 0.5), layer_to_frame)
    box = _bounding_box(corners, frame.shape)
    if box is None:
        return

    x0, y0, x1, y1 = box
    to_roi = np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1]], np.float64) @ layer_to_frame
    warped = cv2.warpPerspective(layer, to_roi, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    _blend_premultiplied(frame[y0:y1, x0:x1], warped)


def _blend_premultiplied(roi: np.ndarray, bgra: np.ndarray) -> None:
    """Blend premultiplied BGRA over a BGR ROI in place, in 8-bit arithmetic (error under 1 level)."""
    keep = cv2.bitwise_not(bgra[..., 3])
    roi[:] = cv2.add(cv2.multiply(roi, cv2.merge([keep, keep, keep]), scale=1 / 255), bgra[..., :3])


def _darken(roi: np.ndarray, shadow: np.ndarray, strength: float) -> None:
    """Multiply a BGR ROI in place by 1 - strength * shadow / 255.

    `shadow` is a uint8 mask at any resolution; it is stretched to the ROI.
    """
    keep = cv2.convertScaleAbs(shadow, alpha=-strength, beta=255)
    keep = cv2.resize(keep, (roi.shape[1], roi.shape[0]), interpolation=cv2.INTER_LINEAR)
    roi[:] = cv2.multiply(roi, cv2.merge([keep, keep, keep]), scale=1 / 255)


# ---------------------------------------------------------------------------
# Sleeves and toploaders


def _sample_holder(rng: np.random.Generator, chosen: set[str]) -> _Holder:
    """Draw the holder outline around the card: none, a sleeve, or a toploader."""
    half_w, half_h = CARD_WIDTH_MM / 2, CARD_HEIGHT_MM / 2

    if "sleeve" in chosen:
        side, end = rng.uniform(2, 4, 2)
        dx = rng.uniform(-0.4, 0.4) * side  # card off-centre across the sleeve
        dy = rng.uniform(0, 0.7) * end  # card slid towards the sealed bottom
        return _Holder("sleeve", -half_w - side - dx, -half_h - end - dy, half_w + side - dx, half_h + end - dy)

    if "toploader" in chosen:
        outer_w, outer_h = TOPLOADER_SIZE_MM
        dx = rng.uniform(-1.5, 1.5)
        bottom = half_h + rng.uniform(2.0, 3.5)  # wall plus a small gap below the card; the gap is at the top
        return _Holder("toploader", -outer_w / 2 - dx, bottom - outer_h, outer_w / 2 - dx, bottom,
                       inner_sleeve=bool(rng.random() < 0.5))

    return _Holder("none", -half_w, -half_h, half_w, half_h)


def _holder_box(holder: _Holder, grid: _LayerGrid) -> tuple[int, int, int, int]:
    corners = grid.points(_rect_corners(holder.x0, holder.y0, holder.x1, holder.y1))
    x0, y0 = np.round(corners.min(axis=0)).astype(int)
    x1, y1 = np.round(corners.max(axis=0)).astype(int)
    return int(x0), int(y0), int(x1) + 1, int(y1) + 1


def _holder_layer(rng: np.random.Generator, holder: _Holder, grid: _LayerGrid) -> np.ndarray:
    """Draw the holder's front as premultiplied BGRA: haze, reflections, seams and edges (mostly transparent)."""
    box = _holder_box(holder, grid)
    if holder.kind == "sleeve":
        alpha, grey = _sleeve_planes(rng, grid, box)
    else:
        alpha, grey = _toploader_planes(rng, grid, box, holder)

    tint = rng.uniform(0.93, 1.0, 3)
    bgr = cv2.merge([cv2.multiply(grey, float(t)) for t in tint])
    return _premultiply(bgr, alpha)


def _reflection_field(rng: np.random.Generator, width: int, height: int, count: int, amplitude: tuple[float, float],
                      sharp: bool) -> np.ndarray:
    """Sum straight bands of reflected light, in alpha units (0 to 1).

    The field is float32 at a quarter of (width, height), because it is smooth.

    Soft bands fall off like a Gaussian. Sharp ones have a flat top and a
    short ramp, because a rigid flat surface mirrors a window or lamp crisply.
    """
    low_w, low_h = max(width // 4, 2), max(height // 4, 2)
    xs = np.linspace(0, width, low_w, dtype=np.float32)[None, :]
    ys = np.linspace(0, height, low_h, dtype=np.float32)[:, None]
    field = np.zeros((low_h, low_w), np.float32)

    for _ in range(count):
        angle = rng.uniform(0, np.pi)
        centre_x, centre_y = rng.uniform(0, width), rng.uniform(0, height)
        band = rng.uniform(0.06, 0.25) * min(width, height)
        distance = np.abs((xs - centre_x) * math.cos(angle) + (ys - centre_y) * math.sin(angle))
        if sharp:
            profile = 1 / (1 + np.exp(np.minimum((distance - band) / (0.08 * band), 50)))
        else:
            profile = np.exp(-((distance / band) ** 2))
        along = (xs - centre_x) * -math.sin(angle) + (ys - centre_y) * math.cos(angle)
        fade = np.exp(-((along / (rng.uniform(0.5, 1.5) * max(width, height))) ** 2))
        field += rng.uniform(*amplitude) * profile * fade

    return field


def _edge_modulation(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Draw slow brightness changes for an edge highlight, uint8 in units of 1/255, from 0.35 to 1."""
    field = _value_noise(rng, max(width // 8, 2), max(height // 8, 2), cell_px=6, octaves=2)
    return _upscale(_to_uint8(255 * (0.35 + 0.65 * field)), width, height)


def _alpha_plane(haze: float, reflections: np.ndarray, width: int, height: int) -> np.ndarray:
    return _upscale(_to_uint8(255 * (haze + reflections) + 0.5), width, height)


def _draw_edge_highlight(alpha: np.ndarray, rng: np.random.Generator, box, thickness: int,
                         strength: float) -> None:
    """Raise alpha along the box outline with a bright line whose brightness varies along it."""
    height, width = alpha.shape
    x0, y0, x1, y1 = box
    edge = np.zeros((height, width), np.uint8)
    cv2.rectangle(edge, (x0, y0), (x1 - 1, y1 - 1), int(255 * strength), thickness, cv2.LINE_AA)
    edge = cv2.multiply(edge, _edge_modulation(rng, width, height), scale=1 / 255)
    np.maximum(alpha, edge, out=alpha)


def _sleeve_planes(rng: np.random.Generator, grid: _LayerGrid, box) -> tuple[np.ndarray, np.ndarray]:
    """Draw the alpha and grey uint8 planes of a penny sleeve: light haze, side and bottom seals, soft
    reflections and a shiny outer edge."""
    width, height = grid.width, grid.height
    x0, y0, x1, y1 = box
    mm = grid.length(1.0)

    haze = rng.uniform(0.04, 0.1)
    reflections = _reflection_field(rng, width, height, int(rng.integers(1, 3)), (0.08, 0.3), sharp=False)
    alpha = _alpha_plane(haze, reflections, width, height)

    seal = max(int(round(rng.uniform(1.0, 1.6) * mm)), 1)
    seal_alpha = int(255 * (haze + rng.uniform(0.06, 0.14)))
    for seal_box in ((x0, y0, x0 + seal, y1), (x1 - seal, y0, x1, y1), (x0, y1 - seal, x1, y1)):
        cv2.rectangle(alpha, seal_box[:2], (seal_box[2] - 1, seal_box[3] - 1), seal_alpha, -1)

    if rng.random() < 0.6:
        _draw_curl_highlight(alpha, rng, box, mm)

    _draw_edge_highlight(alpha, rng, box, max(int(round(rng.uniform(0.3, 0.7) * mm)), 1), rng.uniform(0.55, 0.9))
    alpha = cv2.multiply(alpha, _rounded_rect_mask(width, height, box, 1.0 * mm), scale=1 / 255)

    grey = np.full((height, width), int(rng.integers(235, 256)), np.uint8)
    return alpha, grey


def _draw_curl_highlight(alpha: np.ndarray, rng: np.random.Generator, box, mm: float) -> None:
    """Brighten a narrow band along one long side, where a sleeve bends round the card edge."""
    x0, y0, x1, y1 = box
    inset = rng.uniform(0.5, 2.5) * mm
    band = np.zeros_like(alpha)
    x = int(x0 + inset) if rng.random() < 0.5 else int(x1 - 1 - inset)
    span = rng.uniform(0.3, 0.9) * (y1 - y0)
    start = y0 + rng.uniform(0, (y1 - y0) - span)
    cv2.line(band, (x, int(start)), (x, int(start + span)), int(255 * rng.uniform(0.25, 0.5)),
             max(int(rng.uniform(0.6, 1.5) * mm), 1), cv2.LINE_AA)
    band = cv2.GaussianBlur(band, (0, 0), max(0.5 * mm, 0.5))
    np.maximum(alpha, band, out=alpha)


def _toploader_planes(rng: np.random.Generator, grid: _LayerGrid, box,
                      holder: _Holder) -> tuple[np.ndarray, np.ndarray]:
    """Draw the alpha and grey uint8 planes of a rigid toploader: thick sealed rim with a dark inner wall line,
    bright outer edge, thumb notch at the open top, crisp reflections, and an optional sleeve inside."""
    width, height = grid.width, grid.height
    x0, y0, x1, y1 = box
    mm = grid.length(1.0)

    haze = rng.uniform(0.05, 0.1)
    reflections = _reflection_field(rng, width, height, int(rng.integers(1, 3)), (0.1, 0.3), sharp=True)
    alpha = _alpha_plane(haze, reflections, width, height)
    grey = np.full((height, width), int(rng.integers(238, 253)), np.uint8)

    rim = max(int(round(rng.uniform(2.0, 3.0) * mm)), 2)
    rim_alpha = int(255 * (haze + rng.uniform(0.12, 0.22)))
    for rim_box in ((x0, y0, x0 + rim, y1), (x1 - rim, y0, x1, y1), (x0, y1 - rim, x1, y1)):
        cv2.rectangle(alpha, rim_box[:2], (rim_box[2] - 1, rim_box[3] - 1), rim_alpha, -1)
        cv2.rectangle(grey, rim_box[:2], (rim_box[2] - 1, rim_box[3] - 1), int(rng.integers(200, 230)), -1)

    line = max(int(round(0.35 * mm)), 1)
    wall = np.array([(x0 + rim, y0), (x0 + rim, y1 - rim), (x1 - rim, y1 - rim), (x1 - rim, y0)], np.int32)
    dark = int(rng.integers(60, 110))
    cv2.polylines(grey, [wall], False, dark, line, cv2.LINE_AA)
    cv2.polylines(alpha, [wall], False, int(255 * rng.uniform(0.35, 0.55)), line, cv2.LINE_AA)

    _draw_thumb_notch(alpha, grey, rng, box, mm, dark)
    if holder.inner_sleeve:
        _draw_inner_sleeve(alpha, rng, grid, mm)

    _draw_edge_highlight(alpha, rng, box, max(int(round(0.45 * mm)), 1), rng.uniform(0.7, 0.95))
    alpha = cv2.multiply(alpha, _rounded_rect_mask(width, height, box, 2.0 * mm), scale=1 / 255)
    return alpha, grey


def _draw_thumb_notch(alpha: np.ndarray, grey: np.ndarray, rng: np.random.Generator, box, mm: float,
                      dark: int) -> None:
    x0, y0, x1, _ = box
    centre = ((x0 + x1) // 2, y0)
    radius = int(rng.uniform(5.5, 7.0) * mm)
    thickness = max(int(round(0.4 * mm)), 1)
    cv2.ellipse(grey, centre, (radius, radius), 0, 0, 180, dark, thickness, cv2.LINE_AA)
    cv2.ellipse(alpha, centre, (radius, radius), 0, 0, 180, int(255 * 0.6), thickness, cv2.LINE_AA)


def _draw_inner_sleeve(alpha: np.ndarray, rng: np.random.Generator, grid: _LayerGrid, mm: float) -> None:
    x0, y0, x1, y1 = grid.anchor_box
    side, end = rng.uniform(1.0, 2.0) * mm, rng.uniform(1.0, 2.5) * mm
    sleeve_box = (int(x0 - side), int(y0 - end), int(x1 + side), int(y1 + 0.5 * mm))
    _draw_edge_highlight(alpha, rng, sleeve_box, max(int(round(0.3 * mm)), 1), rng.uniform(0.35, 0.6))


# ---------------------------------------------------------------------------
# Lighting and occluders in the frame


def _add_drop_shadow(frame: np.ndarray, rng: np.random.Generator, outline: np.ndarray, px_per_mm: float) -> None:
    """Darken the background under a card lying on it: a soft, offset copy of its outline."""
    offset = rng.uniform(-3, 3, 2) * px_per_mm
    blur = rng.uniform(1.5, 4) * px_per_mm
    shadow_outline = outline + offset.astype(np.float32)
    box = _bounding_box(shadow_outline, frame.shape, pad=3 * blur)
    if box is None:
        return

    x0, y0, x1, y1 = box
    factor = 4
    small = np.zeros((max((y1 - y0) // factor, 1), max((x1 - x0) // factor, 1)), np.uint8)
    points = ((shadow_outline - (x0, y0)) / factor).astype(np.int32)
    cv2.fillConvexPoly(small, points, 255, cv2.LINE_AA)
    small = cv2.GaussianBlur(small, (0, 0), max(blur / factor, 0.5))
    _darken(frame[y0:y1, x0:x1], small, rng.uniform(0.15, 0.35))


def _point_in_quad(quad: np.ndarray, u: float, v: float) -> np.ndarray:
    """Return the bilinear point of a quad at card fractions u (left to right) and v (top to bottom)."""
    top = quad[0] + u * (quad[1] - quad[0])
    bottom = quad[3] + u * (quad[2] - quad[3])
    return top + v * (bottom - top)


def _add_glare(frame: np.ndarray, rng: np.random.Generator, outline: np.ndarray, quad: np.ndarray) -> None:
    """Add one or two specular highlights (ellipses or streaks with a soft halo) on the card and holder.

    The main highlight usually peaks above white, so its core saturates to
    255 as glare on a glossy card does. Highlights stop at the outline: the
    background is taken as matte.
    """
    box = _bounding_box(outline, frame.shape)
    if box is None:
        return
    x0, y0, x1, y1 = box
    surface = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.fillConvexPoly(surface, np.round(outline - (x0, y0)).astype(np.int32), 255, cv2.LINE_AA)

    card_width = float(np.linalg.norm(quad[1] - quad[0]))
    low_shape = (max((y1 - y0) // 4, 2), max((x1 - x0) // 4, 2))
    highlight = np.zeros(low_shape, np.float32)
    for index in range(int(rng.integers(1, 3))):
        centre = (_point_in_quad(quad, *rng.uniform(0.1, 0.9, 2)) - (x0, y0)) / 4
        saturating = index == 0 and rng.random() < 0.75
        peak = rng.uniform(1.2, 2.2) if saturating else rng.uniform(0.35, 0.8)
        highlight += _highlight(rng, low_shape, centre, card_width / 4, peak)

    strength = _upscale(highlight, x1 - x0, y1 - y0) * (surface.astype(np.float32) / 255)
    _wash_out(frame[y0:y1, x0:x1], strength, np.array([255, 250, 245]) * rng.uniform(0.97, 1.0, 3))


def _highlight(rng: np.random.Generator, shape, centre, card_width: float, peak: float) -> np.ndarray:
    """Draw one highlight, float32 in light units: a flat-topped core of height `peak` and a wide soft halo.

    The core's semi-axes are 10-32% of the card width for an ellipse, or
    50-130% by 3-10% for a streak (a tube light or window edge).
    """
    if rng.random() < 0.4:
        major, minor = rng.uniform(0.5, 1.3) * card_width, rng.uniform(0.03, 0.1) * card_width
    else:
        major = rng.uniform(0.1, 0.32) * card_width
        minor = major * rng.uniform(0.45, 1.0)
    angle = rng.uniform(0, np.pi)

    radius2 = _elliptic_radius2(shape, centre, major, minor, angle)
    core = np.exp(-2 * radius2 ** rng.uniform(1.0, 2.0))
    halo_scale = rng.uniform(2.0, 3.5)
    halo = np.exp(-radius2 / halo_scale ** 2)
    return peak * core + rng.uniform(0.12, 0.35) * halo


def _elliptic_radius2(shape, centre, major: float, minor: float, angle: float) -> np.ndarray:
    """Return the squared elliptic radius of each pixel: 1 on the ellipse with semi-axes `major` and `minor`
    turned by `angle` radians."""
    height, width = shape
    xs = np.arange(width, dtype=np.float32)[None, :] - centre[0]
    ys = np.arange(height, dtype=np.float32)[:, None] - centre[1]
    along = xs * math.cos(angle) + ys * math.sin(angle)
    across = -xs * math.sin(angle) + ys * math.cos(angle)
    return (along / major) ** 2 + (across / minor) ** 2


def _wash_out(roi: np.ndarray, strength: np.ndarray, light_bgr: np.ndarray) -> None:
    """Blend the ROI towards `light_bgr` by `strength` (float32 [h, w]); above 1 the light saturates."""
    keep = _to_uint8(255 * (1 - np.minimum(strength, 1)) + 0.5)
    added = cv2.merge([_to_uint8(strength * float(level) + 0.5) for level in light_bgr])
    roi[:] = cv2.add(cv2.multiply(roi, cv2.merge([keep, keep, keep]), scale=1 / 255), added)


@dataclass
class _Finger:
    """A finger in frame pixels: a tapered band from off-frame to a round tip."""

    tip: np.ndarray  # furthest point of the fingertip
    direction: np.ndarray  # unit vector from the hand towards the tip
    tip_width: float
    base_width: float
    reach: float  # length from the tip back towards the hand, enough to leave the frame

    def polygon(self, width_scale: float = 1.0) -> tuple[np.ndarray, np.ndarray, float]:
        """Return (band polygon, cap centre, cap radius), widths scaled by `width_scale`."""
        across = np.array([-self.direction[1], self.direction[0]])
        cap_centre = self.tip - self.direction * self.tip_width / 2
        taper_end = cap_centre - self.direction * 2.5 * self.tip_width
        base = cap_centre - self.direction * self.reach
        half_tip, half_base = self.tip_width / 2 * width_scale, self.base_width / 2 * width_scale
        points = np.array([cap_centre + across * half_tip, taper_end + across * half_base, base + across * half_base,
                           base - across * half_base, taper_end - across * half_base, cap_centre - across * half_tip])
        return points, cap_centre, half_tip

    def draw(self, image: np.ndarray, offset, value, width_scale: float = 1.0, pixel_scale: float = 1.0) -> None:
        """Fill the finger into `image`, whose pixel (0, 0) is frame point `offset` and which has
        `pixel_scale` image pixels per frame pixel."""
        points, cap_centre, radius = self.polygon(width_scale)
        shift = np.asarray(offset, np.float64)
        cv2.fillConvexPoly(image, np.round((points - shift) * pixel_scale).astype(np.int32), value, cv2.LINE_AA)
        centre = (np.asarray(cap_centre) - shift) * pixel_scale
        cv2.circle(image, _point(centre), int(round(radius * pixel_scale)), value, -1, cv2.LINE_AA)


def _add_finger(frame: np.ndarray, rng: np.random.Generator, h_plane: np.ndarray, quad: np.ndarray) -> float:
    """Draw a finger or thumb entering the card from one edge; return the share of the card it hides (<= 0.2)."""
    finger, share = _place_finger(frame.shape, rng, h_plane, quad)
    box = _bounding_box(np.array([finger.tip, finger.tip - finger.direction * finger.reach]), frame.shape,
                        pad=finger.base_width)
    if box is None:
        return 0.0

    x0, y0, x1, y1 = box
    roi = frame[y0:y1, x0:x1]
    _draw_finger_shadow(roi, rng, finger, (x0, y0))
    _draw_finger_skin(roi, rng, finger, (x0, y0))
    return share


def _place_finger(frame_shape, rng: np.random.Generator, h_plane: np.ndarray,
                  quad: np.ndarray) -> tuple[_Finger, float]:
    """Choose entry edge, angle, width (15-24 mm) and depth so the finger hides up to 20% of the card."""
    corners = _card_corners_mm()
    edge = _pick_finger_edge(rng, frame_shape, h_plane)
    start, end = corners[edge], corners[(edge + 1) % 4]
    entry = start + rng.uniform(0.2, 0.8) * (end - start)
    edge_normal = np.array([-(end - start)[1], (end - start)[0]]) / np.linalg.norm(end - start)
    inward = edge_normal if edge_normal @ -entry > 0 else -edge_normal  # towards the card centre at 0
    inward = _rotate(inward, rng.uniform(-25, 25))

    width_mm = rng.uniform(19, 24) if rng.random() < 0.5 else rng.uniform(15, 19)
    target_share = rng.uniform(0.05, MAX_OCCLUDED_SHARE)
    # A capsule of width w reaching depth d covers w * (d - w / 2) + pi * w^2 / 8.
    area_mm2 = target_share * CARD_WIDTH_MM * CARD_HEIGHT_MM
    depth_mm = max((area_mm2 - np.pi * width_mm ** 2 / 8) / width_mm + width_mm / 2, 0.4 * width_mm)

    height, width = frame_shape[:2]
    reach = float(math.hypot(width, height))
    base_scale = rng.uniform(1.3, 1.7)
    for _ in range(12):
        entry_px, tip_px, side_px = _transform(np.array([entry, entry + inward * depth_mm,
                                                         entry + _rotate(inward, 90) * width_mm]), h_plane)
        direction = (tip_px - entry_px) / max(float(np.linalg.norm(tip_px - entry_px)), 1e-6)
        tip_width = float(np.linalg.norm(side_px - entry_px))
        finger = _Finger(tip_px, direction, tip_width, tip_width * base_scale, reach)
        share = _occluded_share(frame_shape, finger, quad)
        if share <= MAX_OCCLUDED_SHARE:
            break
        depth_mm *= 0.85
    return finger, share


def _pick_finger_edge(rng: np.random.Generator, frame_shape, h_plane: np.ndarray) -> int:
    """Pick the card edge a finger enters from: one of the two facing the nearest frame borders (70/30),
    as a hand holding the card reaches in from outside the frame."""
    height, width = frame_shape[:2]
    corners = _card_corners_mm()
    distances = []
    for edge in range(4):
        middle = (corners[edge] + corners[(edge + 1) % 4]) / 2
        inside, outside = _transform(np.array([middle, middle * 1.2]), h_plane)
        distances.append(_distance_to_border(inside, outside - inside, width, height))
    nearest = np.argsort(distances)[:2]
    return int(nearest[0] if rng.random() < 0.7 else nearest[1])


def _distance_to_border(point: np.ndarray, direction: np.ndarray, width: int, height: int) -> float:
    """Return the distance in pixels from a point inside the frame to its border along `direction`."""
    direction = direction / max(float(np.linalg.norm(direction)), 1e-9)
    steps = []
    for value, step, limit in ((point[0], direction[0], width), (point[1], direction[1], height)):
        if step > 1e-9:
            steps.append((limit - value) / step)
        elif step < -1e-9:
            steps.append(-value / step)
    return float(min(steps)) if steps else float("inf")


def _rotate(vector: np.ndarray, degrees: float) -> np.ndarray:
    angle = math.radians(degrees)
    cos, sin = math.cos(angle), math.sin(angle)
    return np.array([cos * vector[0] - sin * vector[1], sin * vector[0] + cos * vector[1]])


def _occluded_share(frame_shape, finger: _Finger, quad: np.ndarray) -> float:
    """Return the share of the card's visible area in the frame that the finger covers."""
    box = _bounding_box(quad, frame_shape, pad=0)
    if box is None:
        return 0.0
    x0, y0, x1, y1 = box
    card = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.fillConvexPoly(card, np.round(quad - (x0, y0)).astype(np.int32), 255)
    covered = np.zeros_like(card)
    finger.draw(covered, (x0, y0), 255)
    card_pixels = cv2.countNonZero(card)
    return cv2.countNonZero(cv2.bitwise_and(card, covered)) / card_pixels if card_pixels else 0.0


def _draw_finger_shadow(roi: np.ndarray, rng: np.random.Generator, finger: _Finger, origin) -> None:
    offset = _rotate(np.array([1.0, 0.0]), rng.uniform(0, 360)) * rng.uniform(0.1, 0.3) * finger.tip_width
    small = np.zeros((max(roi.shape[0] // 4, 1), max(roi.shape[1] // 4, 1)), np.uint8)
    finger.draw(small, np.asarray(origin) - offset, 255, pixel_scale=0.25)
    small = cv2.GaussianBlur(small, (0, 0), max(finger.tip_width / 16, 0.5))
    _darken(roi, small, rng.uniform(0.3, 0.5))


def _draw_finger_skin(roi: np.ndarray, rng: np.random.Generator, finger: _Finger, origin) -> None:
    """Blend a shaded skin-coloured finger (darker at its sides, often with a nail) over the ROI.

    Shading is drawn at half resolution because it is smooth; the outline is
    drawn at full resolution to keep its edge sharp.
    """
    skin = _skin_tone(rng)
    height, width = roi.shape[:2]
    half = np.empty((max(height // 2, 1), max(width // 2, 1), 3), np.uint8)
    half[:] = _to_uint8(skin * 0.62)
    steps = 6
    for step in range(steps):
        level = step / (steps - 1)
        shade = [float(c) for c in _to_uint8(skin * (0.62 + 0.45 * level))]
        finger.draw(half, origin, shade, width_scale=1.0 - 0.65 * level, pixel_scale=0.5)
    if rng.random() < 0.75:
        _draw_nail(half, rng, finger, origin, skin, pixel_scale=0.5)
    half = cv2.GaussianBlur(half, (0, 0), max(finger.tip_width / 30, 0.5))
    colour = _upscale(half, width, height)

    alpha = np.zeros((height, width), np.uint8)
    finger.draw(alpha, origin, 255)
    _blend_premultiplied(roi, _premultiply(colour, alpha))


def _skin_tone(rng: np.random.Generator) -> np.ndarray:
    """Draw a BGR skin colour between two neighbouring reference tones, with brightness jitter."""
    position = rng.uniform(0, len(_SKIN_TONES_BGR) - 1)
    low = int(position)
    high = min(low + 1, len(_SKIN_TONES_BGR) - 1)
    tone = _SKIN_TONES_BGR[low] + (position - low) * (_SKIN_TONES_BGR[high] - _SKIN_TONES_BGR[low])
    return tone * rng.uniform(0.85, 1.1)


def _draw_nail(image: np.ndarray, rng: np.random.Generator, finger: _Finger, origin, skin: np.ndarray,
               pixel_scale: float) -> None:
    """Draw a fingernail near the tip: pinkish plate, whiter free edge at the tip, a small specular spot."""
    width = finger.tip_width * pixel_scale
    direction = finger.direction
    tip = (finger.tip - np.asarray(origin)) * pixel_scale
    angle = math.degrees(math.atan2(direction[1], direction[0]))
    centre = tip - direction * 0.42 * width
    axes = (int(0.36 * width * rng.uniform(0.8, 1.1)), int(0.32 * width))

    plate = 0.5 * skin + 0.5 * np.array([205, 200, 235])
    cv2.ellipse(image, _point(centre), axes, angle, 0, 360, [float(c) for c in _to_uint8(skin * 0.75)], -1,
                cv2.LINE_AA)
    inner = (max(axes[0] - 2, 1), max(axes[1] - 2, 1))
    cv2.ellipse(image, _point(centre), inner, angle, 0, 360, [float(c) for c in _to_uint8(plate)], -1, cv2.LINE_AA)
    free_edge = 0.5 * plate + 0.5 * np.array([235, 240, 245])
    cv2.ellipse(image, _point(centre), inner, angle, -60, 60, [float(c) for c in _to_uint8(free_edge)],
                max(int(0.08 * width), 1), cv2.LINE_AA)
    spot = centre - direction * 0.08 * width + np.array([-direction[1], direction[0]]) * 0.1 * width
    cv2.ellipse(image, _point(spot), (max(int(0.12 * width), 1), max(int(0.05 * width), 1)), angle + 90, 0, 360,
                [float(c) for c in _to_uint8(plate * 0.5 + 125)], -1, cv2.LINE_AA)


# ---------------------------------------------------------------------------
# Camera: optics, exposure, sensor noise and compression


def _apply_camera(frame: np.ndarray, rng: np.random.Generator, chosen: set[str]) -> np.ndarray:
    """Apply blur, uneven light and exposure, sensor noise, the low-light tone curve and JPEG, in that order.

    Pixels that are white (254 or more in every channel) after the blur stand
    for light beyond the sensor's range, such as a glare core, so they stay at
    255 through exposure and noise.
    """
    height, width = frame.shape[:2]
    scale = math.hypot(width, height) / 1600  # blur sizes are given for a 1280 x 960 frame

    frame = _apply_blur(frame, rng, chosen, scale)
    clipped = cv2.inRange(frame, (254, 254, 254), (255, 255, 255))

    low_light = "low_light" in chosen
    exposure = rng.uniform(0.2, 0.35) if low_light else rng.uniform(0.92, 1.05)
    if "noise" in chosen:
        sigma = rng.uniform(5, 12)
    else:
        sigma = rng.uniform(2.5, 5) if low_light else rng.uniform(0.8, 2.2)
    frame = _expose(frame, rng, exposure, sigma)

    if low_light:
        # The camera's gain lifts the image to 30-70% of a normal exposure, amplifying the noise with it.
        frame = _low_light_tone(frame, rng, gain=rng.uniform(0.3, 0.7) / exposure)
    if cv2.countNonZero(clipped):
        frame = cv2.bitwise_or(frame, cv2.merge([clipped, clipped, clipped]))
    if "jpeg" in chosen:
        frame = encode_jpeg(frame, int(rng.integers(30, 71)))
    return frame


def _apply_blur(frame: np.ndarray, rng: np.random.Generator, chosen: set[str], scale: float) -> np.ndarray:
    blurred = False
    if "blur" in chosen:
        frame = _filter_reduced(frame, disk_kernel, rng.uniform(2, 6) * scale, max_full_size=2.5)
        blurred = True
    if "motion_blur" in chosen:
        angle = rng.uniform(0, 180)
        frame = _filter_reduced(frame, lambda length: motion_kernel(length, angle), rng.uniform(8, 28) * scale,
                                max_full_size=10)
        blurred = True
    if not blurred and rng.random() < 0.5:
        frame = cv2.GaussianBlur(frame, (0, 0), rng.uniform(0.3, 0.8))
    return frame


def _filter_reduced(frame: np.ndarray, make_kernel, size_px: float, max_full_size: float) -> np.ndarray:
    """Convolve with make_kernel(size_px), at half resolution when size_px exceeds `max_full_size`.

    The blur hides the lost resolution along its own direction. A defocus
    disk may use a low limit, but a motion streak blurs one direction only, so
    it needs a higher one to keep detail across the streak.
    """
    if size_px <= max_full_size:
        return cv2.filter2D(frame, -1, make_kernel(size_px))
    height, width = frame.shape[:2]
    half = cv2.resize(frame, (width // 2, height // 2), interpolation=cv2.INTER_AREA)
    half = cv2.filter2D(half, -1, make_kernel(size_px / 2))
    return cv2.resize(half, (width, height), interpolation=cv2.INTER_LINEAR)


def disk_kernel(radius: float) -> np.ndarray:
    """Build an anti-aliased disk kernel of `radius` px, the point spread of a defocused lens."""
    size = 2 * math.ceil(radius) + 1
    coords = np.arange(size, dtype=np.float32) - size // 2
    distance = np.sqrt(coords[None, :] ** 2 + coords[:, None] ** 2)
    kernel = np.clip(radius + 0.5 - distance, 0, 1)
    return kernel / kernel.sum()


def motion_kernel(length: float, angle_deg: float) -> np.ndarray:
    """Build an anti-aliased line kernel of `length` px at `angle_deg`, the point spread of a linear shake."""
    size = 2 * math.ceil(length / 2) + 1
    kernel = np.zeros((size, size), np.uint8)
    centre = size // 2
    dx = length / 2 * math.cos(math.radians(angle_deg))
    dy = length / 2 * math.sin(math.radians(angle_deg))
    cv2.line(kernel, _point((centre - dx, centre - dy)), _point((centre + dx, centre + dy)), 255, 1, cv2.LINE_AA)
    kernel = kernel.astype(np.float32)
    return kernel / kernel.sum()


def _expose(frame: np.ndarray, rng: np.random.Generator, exposure: float, sigma: float) -> np.ndarray:
    """Multiply by an uneven light field (vignetting, white balance, `exposure`) and add noise of `sigma` levels.

    The result is rounded to whole levels.
    """
    height, width = frame.shape[:2]
    exposed = cv2.multiply(frame, _illumination(rng, width, height, exposure), scale=1 / 128)
    return cv2.add(exposed, _sensor_noise(rng, width, height, sigma), dtype=cv2.CV_8U)


def _sensor_noise(rng: np.random.Generator, width: int, height: int, sigma: float) -> np.ndarray:
    """Draw int16 BGR noise [height, width, 3] with a standard deviation of about `sigma` levels.

    Luma noise is per pixel. It is the difference of two uniform random
    bytes, a triangular distribution close to Gaussian and far cheaper to
    draw. Chroma noise is blotchy (drawn at a quarter of the resolution) as in
    demosaiced phone images, and is left out below 1 level.
    """
    pixels = height * width
    raw = rng.bit_generator.random_raw((2 * pixels + 7) // 8).view(np.uint8)
    first = raw[:pixels].reshape(height, width)
    second = raw[pixels:2 * pixels].reshape(height, width)
    luma = cv2.subtract(first, second, dtype=cv2.CV_16S)
    luma = cv2.multiply(luma, sigma / 104.5, dtype=cv2.CV_16S)  # 104.5 is the std of the byte difference
    noise = cv2.merge([luma, luma, luma])

    chroma_sigma = 0.35 * sigma
    if chroma_sigma >= 1.0:
        small = (max(height // 4, 1), max(width // 4, 1), 3)
        chroma = (rng.random(small, dtype=np.float32) - 0.5) * (chroma_sigma * math.sqrt(12))
        noise = cv2.add(noise, _upscale(chroma.astype(np.int16), width, height))
    return noise


def _illumination(rng: np.random.Generator, width: int, height: int, exposure: float) -> np.ndarray:
    """Draw a per-pixel BGR gain, uint8 [height, width, 3] in units of 1/128, from smooth brightness changes,
    vignetting, white balance and exposure."""
    low_w, low_h = max(width // 32, 4), max(height // 32, 4)
    brightness = 0.88 + 0.17 * _value_noise(rng, low_w, low_h, cell_px=low_w / 2, octaves=2)
    xs = np.linspace(-1, 1, low_w, dtype=np.float32)[None, :]
    ys = np.linspace(-1, 1, low_h, dtype=np.float32)[:, None]
    vignette = 1 - rng.uniform(0, 0.25) * (xs ** 2 + ys ** 2) / 2
    white_balance = rng.uniform(0.95, 1.05, 3).astype(np.float32)
    gain = (brightness * vignette * exposure)[..., None] * white_balance
    return _upscale(_to_uint8(gain * 128 + 0.5), width, height)


def _low_light_tone(frame: np.ndarray, rng: np.random.Generator, gain: float) -> np.ndarray:
    """Apply the camera's low-light response: digital `gain`, a gamma that deepens shadows, and a colour cast."""
    gamma = rng.uniform(1.0, 1.35)
    if rng.random() < 0.6:  # warm, tungsten-like
        cast = (rng.uniform(0.8, 0.92), 1.0, rng.uniform(1.02, 1.12))
    else:  # cool, like a dim LED or screen light
        cast = (rng.uniform(1.04, 1.15), 1.0, rng.uniform(0.82, 0.95))
    levels = np.arange(256, dtype=np.float32) / 255
    curve = np.clip(levels * gain, 0, 1) ** gamma * 255
    lut = np.stack([_to_uint8(curve * c + 0.5) for c in cast], axis=-1).reshape(256, 1, 3)
    return cv2.LUT(frame, lut)


def encode_jpeg(frame: np.ndarray, quality: int) -> np.ndarray:
    """Round-trip a BGR frame through JPEG at `quality` (0-100) and return the decoded frame."""
    ok, data = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError(f"JPEG encoding failed for a frame of shape {frame.shape}")
    return cv2.imdecode(data, cv2.IMREAD_COLOR)


# ---------------------------------------------------------------------------
# Scenes


def render_scene(card_bgr: np.ndarray, rng: np.random.Generator, conditions: Sequence[str] | None = None,
                 frame_size: tuple[int, int] = (1280, 960)) -> Scene:
    """Render one card into a camera-like frame of `frame_size` (width, height) pixels.

    `conditions` is a subset of CONDITIONS (at most one of each of
    EXCLUSIVE_GROUPS), or None for a random mix of 1-3.
    The card covers 15-45% of the frame (3-8% for small_in_frame), and the
    whole card and its holder lie inside the frame. tight_crop is the
    exception: its frame is cut around the card like a scan. That frame is
    portrait (landscape after a quarter turn) with its long side equal to
    max(frame_size), and the card fills at least 90% of it, so its corners may
    lie just outside.
    """
    card = _as_bgr(card_bgr)
    _check_frame_size(frame_size)
    chosen = random_conditions(rng) if conditions is None else validate_conditions(conditions)
    chosen_set = set(chosen)

    pose = _sample_pose(rng, chosen_set)
    holder = _sample_holder(rng, chosen_set)
    h_plane, frame_wh = _pose_in_frame(rng, pose, holder, chosen_set, frame_size)
    quad = _transform(_card_corners_mm(), h_plane)
    outline = _transform(_rect_corners(holder.x0, holder.y0, holder.x1, holder.y1), h_plane)

    kind = _background_kind(rng, chosen_set)
    frame = render_background(rng, frame_wh, kind)
    px_per_mm = _pixels_per_mm(h_plane, _card_corners_mm())
    if "tight_crop" not in chosen_set and rng.random() < 0.6:
        _add_drop_shadow(frame, rng, outline, px_per_mm)

    _composite_card(frame, rng, card, holder, h_plane)
    if "glare" in chosen_set:
        _add_glare(frame, rng, outline, quad)
    occluded = _add_finger(frame, rng, h_plane, quad) if "occlusion" in chosen_set else 0.0

    frame = _apply_camera(frame, rng, chosen_set)
    return Scene(frame, [quad.astype(np.float32)], [0], chosen, [float(occluded)], kind)


def _as_bgr(image: np.ndarray) -> np.ndarray:
    """Return a BGR, BGRA or greyscale uint8 card image as BGR; raise ValueError for anything else."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise ValueError(f"card image must be a uint8 numpy array, got {type(image).__name__} "
                         f"of dtype {getattr(image, 'dtype', None)}")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 8:
        raise ValueError(f"card image must be [H, W, 3] BGR with sides of at least 8 px, got shape {image.shape}")
    return image


def _pose_in_frame(rng: np.random.Generator, pose: _Pose, holder: _Holder, chosen: set[str],
                   frame_size: tuple[int, int]) -> tuple[np.ndarray, tuple[int, int]]:
    """Return the card-plane-to-frame homography and the frame size."""
    card_mm = _card_corners_mm()
    outline_mm = _rect_corners(holder.x0, holder.y0, holder.x1, holder.y1)
    width, height = frame_size

    if "tight_crop" in chosen:
        long_side = max(frame_size)
        h_image = _plane_homography(pose, card_mm, long_side, long_side)
        return _place_tight(rng, h_image, pose, long_side)

    share_range = SMALL_CARD_AREA if "small_in_frame" in chosen else DEFAULT_CARD_AREA
    area_share = rng.uniform(*share_range)
    target_height = math.sqrt(area_share * width * height * CARD_HEIGHT_MM / CARD_WIDTH_MM)
    h_image = _plane_homography(pose, card_mm, width, target_height)
    return _place_in_frame(rng, h_image, card_mm, outline_mm, area_share, frame_size), frame_size


def _background_kind(rng: np.random.Generator, chosen: set[str]) -> str:
    if "busy_bg" in chosen:
        return "clutter"
    if "dark_bg" in chosen:
        return "dark"
    if "card_colored_bg" in chosen:
        return "card_colored"
    if "tight_crop" in chosen:
        return str(rng.choice(("paper", "gradient", "dark")))  # scanner lid or a plain sheet
    return str(rng.choice(PLAIN_BACKGROUND_KINDS))


def _composite_card(frame: np.ndarray, rng: np.random.Generator, card: np.ndarray, holder: _Holder,
                    h_plane: np.ndarray) -> None:
    """Warp the card, then its holder's front, into the frame."""
    outline_mm = _rect_corners(holder.x0, holder.y0, holder.x1, holder.y1)
    px_per_mm = min(_pixels_per_mm(h_plane, outline_mm), 1600 / CARD_HEIGHT_MM)
    card_rect = (-CARD_WIDTH_MM / 2, -CARD_HEIGHT_MM / 2, CARD_WIDTH_MM / 2, CARD_HEIGHT_MM / 2)
    grid = _layer_grid(card_rect, (holder.x0, holder.y0, holder.x1, holder.y1), px_per_mm)
    layer_to_frame = h_plane @ np.linalg.inv(grid.mm_to_px)

    _composite_layer(frame, _card_layer(card, grid), layer_to_frame)
    if holder.kind != "none":
        _composite_layer(frame, _holder_layer(rng, holder, grid), layer_to_frame)


# ---------------------------------------------------------------------------
# Binder pages

# Conditions render_binder can add to the page; holders, occlusion and framing do not apply to it.
BINDER_CONDITIONS = ("clean", "perspective", "rotation", "upside_down", "busy_bg", "dark_bg", "card_colored_bg",
                     "glare", "blur", "motion_blur", "noise", "jpeg", "low_light")


@dataclass
class _BinderPage:
    """Layout of a binder page on its plane, in mm with the page centre at 0."""

    rect: tuple[float, float, float, float]  # x0, y0, x1, y1 of the page
    grid_origin: tuple[float, float]  # top-left seam crossing of the pocket grid
    rows: int
    cols: int
    ring_holes: list[tuple[float, float]]  # centres of the punched holes in the left margin
    card_to_page: list[np.ndarray]  # per pocket, row-major: 3x3 affine from card-plane mm to page mm


def render_binder(cards_bgr: list[np.ndarray], rng: np.random.Generator, rows: int, cols: int,
                  frame_size: tuple[int, int] = (1280, 960), sleeves: bool = True,
                  conditions: Sequence[str] = ()) -> Scene:
    """Render a binder page of rows x cols pockets (a 9-pocket page is 3 x 3) filling 45-85% of the frame.

    Pocket k, counted row by row, contains cards_bgr[k % len(cards_bgr)], so
    fewer cards than pockets repeat. With `sleeves` the cards sit behind the
    page's clear pocket film (seams, openings, reflections); without it they
    lie bare on the backing sheet. `conditions` adds any of
    BINDER_CONDITIONS, and the scene lists "sleeve" when pockets are drawn.
    """
    cards = [_as_bgr(card) for card in cards_bgr]
    _check_frame_size(frame_size)
    if not cards:
        raise ValueError("cards_bgr is empty; pass at least one card image")
    if not (1 <= rows <= 4 and 1 <= cols <= 4):
        raise ValueError(f"rows and cols must be 1 to 4 pockets, got rows={rows}, cols={cols}")
    unsupported = [name for name in conditions if name in CONDITIONS and name not in BINDER_CONDITIONS]
    if unsupported:
        raise ValueError(f"render_binder does not support {unsupported}; use conditions from {BINDER_CONDITIONS}")
    chosen = set(validate_conditions(conditions)) - {"clean"}

    page = _sample_page(rng, rows, cols)
    page_mm = _rect_corners(*page.rect)
    h_plane = _place_page(rng, page_mm, chosen, frame_size)
    page_quad = _transform(page_mm, h_plane)

    kind = _background_kind(rng, chosen)
    frame = render_background(rng, frame_size, kind)
    px_per_mm = _pixels_per_mm(h_plane, page_mm)
    _add_drop_shadow(frame, rng, page_quad, px_per_mm)
    page_grid = _layer_grid(page.rect, page.rect, px_per_mm)
    page_to_frame = h_plane @ np.linalg.inv(page_grid.mm_to_px)
    _composite_layer(frame, _page_backing_layer(rng, page, page_grid), page_to_frame)

    quads, indices = [], []
    bare = _Holder("none", -CARD_WIDTH_MM / 2, -CARD_HEIGHT_MM / 2, CARD_WIDTH_MM / 2, CARD_HEIGHT_MM / 2)
    for pocket, card_to_page in enumerate(page.card_to_page):
        h_card = h_plane @ card_to_page
        _composite_card(frame, rng, cards[pocket % len(cards)], bare, h_card)
        quads.append(_transform(_card_corners_mm(), h_card).astype(np.float32))
        indices.append(pocket % len(cards))

    if sleeves:
        _composite_layer(frame, _pocket_film_layer(rng, page, page_grid), page_to_frame)
    if "glare" in chosen:
        _add_glare(frame, rng, page_quad, quads[int(rng.integers(len(quads)))])

    frame = _apply_camera(frame, rng, chosen)
    listed = validate_conditions(sorted(chosen | {"sleeve"} if sleeves else chosen))
    return Scene(frame, quads, indices, listed, [0.0] * len(quads), kind)


def _sample_page(rng: np.random.Generator, rows: int, cols: int) -> _BinderPage:
    pitch_x, pitch_y = BINDER_POCKET_PITCH_MM
    left, right = rng.uniform(14, 18), rng.uniform(5, 8)  # the ring holes are in the wider left margin
    top, bottom = rng.uniform(6, 10), rng.uniform(6, 10)
    width = left + cols * pitch_x + right
    height = top + rows * pitch_y + bottom
    x0, y0 = -width / 2, -height / 2
    grid_x, grid_y = x0 + left, y0 + top

    card_to_page = []
    for row in range(rows):
        for col in range(cols):
            centre_x = grid_x + (col + 0.5) * pitch_x + rng.uniform(-0.8, 0.8)
            centre_y = grid_y + (row + 0.5) * pitch_y + rng.uniform(0, 1.2)  # cards settle towards the bottom
            angle = math.radians(rng.uniform(-1.2, 1.2))
            cos, sin = math.cos(angle), math.sin(angle)
            card_to_page.append(np.array([[cos, -sin, centre_x], [sin, cos, centre_y], [0, 0, 1]], np.float64))

    # Ring binders punch holes about 108 mm (4.25 in) apart; keep those that fit on the page.
    hole_ys = [y for y in (-108.0, 0.0, 108.0) if abs(y) < height / 2 - 8]
    holes = [(x0 + left / 2, y) for y in hole_ys]
    return _BinderPage((x0, y0, x0 + width, y0 + height), (grid_x, grid_y), rows, cols, holes, card_to_page)


def _place_page(rng: np.random.Generator, page_mm: np.ndarray, chosen: set[str],
                frame_size: tuple[int, int]) -> np.ndarray:
    if "rotation" in chosen:
        angle = rng.uniform(0, 360)
    elif "upside_down" in chosen:
        angle = 180 + rng.uniform(-15, 15)
    else:
        angle = rng.uniform(-6, 6)
    tilt = rng.uniform(12, 30) if "perspective" in chosen else rng.uniform(0, 10)
    pose = _Pose(float(angle), float(tilt), float(rng.uniform(0, 360)), float(rng.uniform(55, 75)))

    width, height = frame_size
    area_share = rng.uniform(0.45, 0.85)
    page_aspect = float(np.ptp(page_mm[:, 1]) / np.ptp(page_mm[:, 0]))
    target_height = math.sqrt(area_share * width * height * page_aspect)
    h_image = _plane_homography(pose, page_mm, width, target_height)
    return _place_in_frame(rng, h_image, page_mm, page_mm, area_share, frame_size)


def _page_backing_layer(rng: np.random.Generator, page: _BinderPage, grid: _LayerGrid) -> np.ndarray:
    """Draw the sheet behind the cards as premultiplied BGRA: black, white or navy, with punched ring holes."""
    backing = [(28, 28, 28), (228, 228, 225), (70, 40, 25)][int(rng.choice(3, p=[0.5, 0.3, 0.2]))]
    low_w, low_h = max(grid.width // 16, 2), max(grid.height // 16, 2)
    shading = 0.92 + 0.12 * _value_noise(rng, low_w, low_h, cell_px=6, octaves=2)
    colour = np.asarray(_jitter_colour(rng, backing, 8), np.float32)
    bgr = _upscale(_to_uint8(shading[..., None] * colour), grid.width, grid.height)

    alpha = _rounded_rect_mask(grid.width, grid.height, grid.anchor_box, grid.length(3.0))
    for centre in page.ring_holes:
        cv2.circle(alpha, _point(grid.points(np.array([centre]))[0]), int(grid.length(3.0)), 0, -1, cv2.LINE_AA)
    return _premultiply(bgr, alpha)


def _pocket_film_layer(rng: np.random.Generator, page: _BinderPage, grid: _LayerGrid) -> np.ndarray:
    """Draw the clear pocket film as premultiplied BGRA: haze, reflections, welded seams and pocket openings."""
    width, height = grid.width, grid.height
    haze = rng.uniform(0.04, 0.09)
    reflections = _reflection_field(rng, width, height, int(rng.integers(1, 4)), (0.08, 0.3), sharp=False)
    alpha = _alpha_plane(haze, reflections, width, height)
    grey = np.full((height, width), int(rng.integers(235, 252)), np.uint8)

    seam = max(int(round(grid.length(BINDER_SEAM_MM))), 2)
    seam_alpha = int(255 * (haze + rng.uniform(0.2, 0.35)))
    weld_grey = int(rng.integers(150, 200))
    for start, end in _seam_lines(page, grid):
        cv2.line(alpha, start, end, seam_alpha, seam)
        cv2.line(grey, start, end, weld_grey, max(seam // 4, 1), cv2.LINE_AA)

    pitch_x, pitch_y = BINDER_POCKET_PITCH_MM
    grid_x, grid_y = page.grid_origin
    opening = max(int(round(grid.length(0.4))), 1)
    for row in range(page.rows):
        y = grid_y + row * pitch_y + BINDER_SEAM_MM / 2 + rng.uniform(0.8, 2.0)
        for col in range(page.cols):
            x = grid_x + col * pitch_x + BINDER_SEAM_MM / 2
            start, end = grid.points(np.array([[x, y], [x + pitch_x - BINDER_SEAM_MM, y]]))
            cv2.line(alpha, _point(start), _point(end), int(255 * rng.uniform(0.35, 0.6)), opening, cv2.LINE_AA)

    _draw_edge_highlight(alpha, rng, grid.anchor_box, max(int(round(grid.length(0.5))), 1), rng.uniform(0.5, 0.8))
    alpha = cv2.multiply(alpha, _rounded_rect_mask(width, height, grid.anchor_box, grid.length(3.0)), scale=1 / 255)
    return _premultiply(cv2.merge([grey, grey, grey]), alpha)


def _seam_lines(page: _BinderPage, grid: _LayerGrid) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Return the layer-pixel end points of every seam line, vertical then horizontal, including the outer
    ones."""
    pitch_x, pitch_y = BINDER_POCKET_PITCH_MM
    grid_x, grid_y = page.grid_origin
    right, bottom = grid_x + page.cols * pitch_x, grid_y + page.rows * pitch_y
    lines_mm = [((grid_x + col * pitch_x, grid_y), (grid_x + col * pitch_x, bottom)) for col in range(page.cols + 1)]
    lines_mm += [((grid_x, grid_y + row * pitch_y), (right, grid_y + row * pitch_y)) for row in range(page.rows + 1)]
    lines = []
    for start, end in lines_mm:
        start_px, end_px = grid.points(np.array([start, end]))
        lines.append((_point(start_px), _point(end_px)))
    return lines
