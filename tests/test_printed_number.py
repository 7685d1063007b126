"""The printed-number check: OCR of the collector number, and how it settles same-art prints."""

import json

import cv2
import numpy as np
import pytest

from pokedge.errors import BackendError, GalleryError
from pokedge.gallery.build import ScanRow
from pokedge.gallery.index import Hit
from pokedge.gallery.printed_totals import FILENAME, SCHEMA, estimate_totals, load_printed_totals
from pokedge.gallery.same_art import load_same_art
from pokedge.gallery.store import CardInfo, Gallery
from pokedge.ocr import RECOGNIZER_FILE, TextReader
from pokedge.recognition.decision import MATCH, UNKNOWN, Decision
from pokedge.recognition.printed_number import (
    NumberCheck,
    RecentReads,
    band_from_card,
    band_from_frame,
    card_number,
    parse_printed_number,
    read_printed_number,
)
from pokedge.synth import make_test_card


@pytest.fixture(scope="module")
def reader():
    return TextReader()


def numbered_card(number: str, seed: int = 3, width: int = 630, height: int = 880) -> np.ndarray:
    """A drawn card with `number` printed on a plain strip at its bottom right, as Base Set prints it."""
    card = make_test_card(np.random.default_rng(seed), width, height)
    if number:
        cv2.rectangle(card, (width - 190, height - 62), (width - 30, height - 22), (235, 235, 235), -1)
        cv2.putText(card, number, (width - 180, height - 30), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (20, 20, 20), 2,
                    cv2.LINE_AA)
    return card


def place_in_frame(card: np.ndarray, quad: np.ndarray, size=(1280, 960)) -> np.ndarray:
    frame = np.full((size[1], size[0], 3), 60, np.uint8)
    height, width = card.shape[:2]
    corners = np.array([[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1]], np.float32)
    matrix = cv2.getPerspectiveTransform(corners, quad.astype(np.float32))
    return cv2.warpPerspective(card, matrix, size, dst=frame, borderMode=cv2.BORDER_TRANSPARENT)


@pytest.mark.parametrize("text,expected", [
    ("2/102", (2, 102, "2/102")),
    ("007/091", (7, 91, "007/091")),
    ("110/105★", (110, 105, "110/105")),
    ("2 / 102", (2, 102, "2/102")),
    ("0041/185", None),  # four digits: a misread, not a number
    ("69/1300", None),
    ("Illus. Ken Sugimori", None),
    ("SWSH061", None),
])
def test_parse_printed_number(text, expected):
    found = parse_printed_number(text)
    assert (found.number, found.total, found.text) == expected if expected else found is None


@pytest.mark.parametrize("number,expected", [("4", 4), ("004", 4), ("15_A1", 15), ("SWSH061", None), ("TG15", None)])
def test_card_number(number, expected):
    assert card_number(number) == expected


def test_reads_number_of_tilted_card(reader):
    quad = np.array([[420, 80], [860, 120], [830, 740], [390, 700]], np.float32)
    frame = place_in_frame(numbered_card("2/102"), quad)

    printed = read_printed_number(reader, band_from_frame(frame, quad))
    assert printed is not None
    assert (printed.number, printed.total) == (2, 102)


def test_card_without_a_number_reads_nothing(reader):
    assert read_printed_number(reader, band_from_card(numbered_card(""))) is None


def test_small_card_is_not_read():
    quad = np.array([[100, 100], [250, 100], [250, 310], [100, 310]], np.float32)  # 210 px high
    assert band_from_frame(np.zeros((480, 640, 3), np.uint8), quad) is None


# --------------------------------------------------------------------------
# Settling the decision


def small_gallery() -> Gallery:
    cards = [
        CardInfo("base1-2", "Blastoise", "base1", "2", "Base"),
        CardInfo("base4-2", "Blastoise", "base4", "2", "Base Set 2"),
        CardInfo("sv3pt5-4", "Charmander", "sv3pt5", "004", "151"),
        CardInfo("sv3pt5-5", "Charmeleon", "sv3pt5", "005", "151"),
        CardInfo("sv3pt5-119", "Seaking", "sv3pt5", "119", "151"),
    ]
    embeddings = np.eye(len(cards), 8, dtype=np.float32)
    return Gallery(embeddings, [c.card_id for c in cards], {c.card_id: c for c in cards}, {})


TOTALS = {"base4": 130, "sv3pt5": 165}  # base1's total unknown, as with small scans


def decision(*card_ids: str, same_art=(), status=MATCH) -> Decision:
    hits = [Hit(card_id, 0.9 - 0.05 * n, n) for n, card_id in enumerate(card_ids)]
    return Decision(status, hits, 0.2, list(same_art))


def check() -> NumberCheck:
    return NumberCheck(reader=None, gallery=small_gallery(), totals=TOTALS)


def test_number_moves_the_matching_print_first():
    settled = check().settle(decision("base4-2", "sv3pt5-5", same_art=["base1-2"]), parse_printed_number("2/102"))

    assert settled.status == MATCH
    assert settled.hits[0].card_id == "base1-2"
    assert settled.hits[0].row == 0, "a print missing from the hits is added with its gallery row"
    assert settled.same_art == ["base4-2"]


def test_number_keeps_the_print_that_agrees():
    original = decision("base4-2", same_art=["base1-2"])
    assert check().settle(original, parse_printed_number("2/130")) == original


def test_both_wrong_means_missing_print():
    settled = check().settle(decision("sv3pt5-4", "sv3pt5-5"), parse_printed_number("007/091"))

    assert settled.status == UNKNOWN
    assert settled.hits[0].card_id == "sv3pt5-4", "the closest card stays listed"


def test_misread_number_with_the_right_total_changes_nothing():
    original = decision("sv3pt5-4")
    assert check().settle(original, parse_printed_number("094/165")) == original


@pytest.mark.parametrize("text", ["9/16", "19/16", "119/16", "9/165"])
def test_cut_off_own_number_keeps_match(text):
    original = decision("sv3pt5-119")
    assert check().settle(original, parse_printed_number(text)) == original


def test_foreign_short_read_contradicts():
    settled = check().settle(decision("sv3pt5-119"), parse_printed_number("8/16"))
    assert settled.status == UNKNOWN


def test_unknown_total_never_turns_a_match_unknown():
    original = decision("base1-2")
    assert check().settle(original, parse_printed_number("7/64")) == original


def test_unknown_decisions_are_not_read():
    original = decision("sv3pt5-4", status=UNKNOWN)
    frame = np.zeros((960, 1280, 3), np.uint8)
    quad = np.array([[400, 100], [800, 100], [800, 660], [400, 660]], np.float32)
    assert check().apply(original, frame, quad) == (original, None)


# --------------------------------------------------------------------------
# Printed totals of a gallery


def scan_rows(folder, set_id: str, total: int | None, count: int) -> list[ScanRow]:
    rows = []
    for n in range(1, count + 1):
        path = folder / f"{set_id}-{n}.png"
        cv2.imwrite(str(path), numbered_card(f"{n}/{total}" if total else "", seed=n))
        rows.append(ScanRow(CardInfo(f"{set_id}-{n}", f"Mon{n}", set_id, str(n)), path))
    return rows


def test_estimate_totals_keeps_sets_that_agree(tmp_path, reader):
    rows = scan_rows(tmp_path, "aa", 64, 4) + scan_rows(tmp_path, "bb", None, 3)
    totals = estimate_totals(rows, reader)

    assert set(totals) == {"aa"}
    assert totals["aa"]["total"] == 64
    assert totals["aa"]["votes"] >= 3


def test_load_printed_totals(tmp_path):
    assert load_printed_totals(tmp_path) == {}

    (tmp_path / FILENAME).write_text(json.dumps({"schema": SCHEMA, "sets": {"base4": {"total": 130}}}))
    assert load_printed_totals(tmp_path) == {"base4": 130}


@pytest.mark.parametrize("content,message", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "expected schema"),
    (json.dumps({"schema": "other/1", "sets": {}}), "expected schema"),
    (json.dumps({"schema": SCHEMA, "sets": {"base4": {"total": "130"}}}), "'base4' needs a 'total'"),
    (json.dumps({"schema": SCHEMA, "sets": {"base4": {"total": 0}}}), "'base4' needs a 'total'"),
])
def test_malformed_printed_totals_name_the_fault(tmp_path, content, message):
    (tmp_path / FILENAME).write_text(content)
    with pytest.raises(GalleryError, match=message):
        load_printed_totals(tmp_path)


def test_same_art_list_is_rejected(tmp_path):
    (tmp_path / "same_art.json").write_text("[1, 2]")
    with pytest.raises(GalleryError, match="expected schema"):
        load_same_art(tmp_path, ["a-1"])


# --------------------------------------------------------------------------
# Model files


def test_missing_ocr_model_names_the_file(tmp_path):
    with pytest.raises(BackendError, match="OCR model .* is missing"):
        TextReader(tmp_path)


def test_recognizer_without_a_character_list_is_refused(tmp_path, tiny_contract):
    from pokedge.contract import load_contract
    from pokedge.ocr import DETECTOR_FILE, OCR_DIR

    (tmp_path / DETECTOR_FILE).symlink_to(OCR_DIR / DETECTOR_FILE)
    (tmp_path / RECOGNIZER_FILE).symlink_to(load_contract(tiny_contract).model_path)
    with pytest.raises(BackendError, match="no 'character' list"):
        TextReader(tmp_path)


def test_open_recognizer_read_numbers(tiny_contract, tiny_gallery):
    from pokedge.recognition.runtime import RuntimeSources, open_recognizer

    sources = RuntimeSources(tiny_contract, tiny_gallery)
    with_check = open_recognizer(sources, "onnx")
    without = open_recognizer(sources, "onnx", read_numbers=False)

    assert isinstance(with_check.number_check, NumberCheck)
    assert with_check.number_check.recent is None, "a one-shot scan reads every card"
    assert without.number_check is None


def test_service_reuses_number_reads(tiny_contract, tiny_gallery):
    from pokedge.service.recognizers import REUSE_READS_S, load_recognizer

    loaded = load_recognizer(tiny_contract, tiny_gallery, None, "onnx", threads=1)

    assert loaded.recognizer.number_check.recent.max_age_s == REUSE_READS_S


def test_damaged_ocr_model_turns_check_off(tmp_path, tiny_contract, tiny_gallery, monkeypatch, caplog):
    from pokedge import ocr
    from pokedge.recognition import runtime

    (tmp_path / ocr.DETECTOR_FILE).write_bytes(b"not an onnx model")
    (tmp_path / ocr.RECOGNIZER_FILE).write_bytes(b"not an onnx model")

    class DamagedReader(ocr.TextReader):
        def __init__(self):
            super().__init__(tmp_path)

    monkeypatch.setattr(runtime, "TextReader", DamagedReader)
    recognizer = runtime.open_recognizer(runtime.RuntimeSources(tiny_contract, tiny_gallery), "onnx")

    assert recognizer.number_check is None
    assert "cannot load the OCR model" in caplog.text


# --------------------------------------------------------------------------
# Reusing a read while the card stays in view


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


QUAD = np.array([[420, 80], [860, 120], [830, 740], [390, 700]], np.float32)


def test_recent_read_found_in_place():
    recent = RecentReads(1.0, FakeClock())
    recent.add("Blastoise", QUAD, parse_printed_number("2/102"))

    assert str(recent.find("Blastoise", QUAD + 5)) == "2/102"


def test_recent_read_other_name_or_place():
    recent = RecentReads(1.0, FakeClock())
    recent.add("Blastoise", QUAD, parse_printed_number("2/102"))

    assert recent.find("Charmander", QUAD) is None
    assert recent.find("Blastoise", QUAD + 150) is None


def test_recent_read_expires_unless_renewed():
    clock = FakeClock()
    recent = RecentReads(1.0, clock)
    recent.add("Blastoise", QUAD, parse_printed_number("2/102"))

    clock.now += 0.8
    assert recent.find("Blastoise", QUAD) is not None, "seen again in time: renewed"
    clock.now += 0.8
    assert recent.find("Blastoise", QUAD) is not None
    clock.now += 1.1
    assert recent.find("Blastoise", QUAD) is None, "unseen for longer than the reuse time"


class CountingReader:
    """Wraps the real text reader and counts the bands it searches for lines."""

    def __init__(self, reader):
        self.reader = reader
        self.bands = 0

    def find_lines(self, image):
        self.bands += 1
        return self.reader.find_lines(image)

    def recognize(self, crops):
        return self.reader.recognize(crops)


@pytest.mark.parametrize("recent, bands", [(None, 2), (RecentReads(1.0), 1)], ids=["every frame", "reused"])
def test_card_in_view_read_once(reader, recent, bands):
    counting = CountingReader(reader)
    number_check = NumberCheck(counting, small_gallery(), TOTALS, recent)
    frame = place_in_frame(numbered_card("2/102"), QUAD)

    for _ in range(2):
        _, printed = number_check.apply(decision("base4-2", same_art=["base1-2"]), frame, QUAD)
        assert str(printed) == "2/102"

    assert counting.bands == bands


def _ocr_copy(folder):
    from pokedge import ocr

    for name in (ocr.DETECTOR_FILE, ocr.RECOGNIZER_FILE, ocr.CHECKSUMS_FILE):
        (folder / name).write_bytes((ocr.OCR_DIR / name).read_bytes())
    return folder


def test_intact_ocr_models_pass(tmp_path):
    assert TextReader(_ocr_copy(tmp_path)).charset


def test_changed_ocr_model_rejected(tmp_path):
    from pokedge import ocr

    folder = _ocr_copy(tmp_path)
    model = bytearray((folder / ocr.RECOGNIZER_FILE).read_bytes())
    model[len(model) // 2] ^= 0xFF  # one flipped byte in the middle of the file
    (folder / ocr.RECOGNIZER_FILE).write_bytes(bytes(model))

    with pytest.raises(BackendError, match="ppocrv4-rec.onnx has sha256"):
        TextReader(folder)
