"""Shared fixtures: a tiny real ONNX model, synthetic cards and a gallery built from them."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
SHARED_DATA = REPO.parent / "shared" / "data"
sys.path.insert(0, str(TESTS))

from tiny_model import build_tiny_model  # noqa: E402

SYNTHETIC_CARDS = 24


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data with real scans and photos; tests that need it skip when it is absent."""
    if not (SHARED_DATA / "gallery" / "cards.csv").is_file():
        pytest.skip(f"real card data not found at {SHARED_DATA} (the shared folder beside the repo)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_contract(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny_model"))


@pytest.fixture(scope="session")
def synthetic_cards(tmp_path_factory) -> Path:
    """A folder of synthetic card scans plus cards.csv.

    test2-1 is a reprint of test1-1: same name and art, another set symbol.
    """
    from pokedge.synth import make_test_card

    folder = tmp_path_factory.mktemp("cards")
    rng = np.random.default_rng(7)
    rows = []
    for i in range(SYNTHETIC_CARDS):
        card_id = f"test{i // 12 + 1}-{i % 12 + 1}"
        name = "Pairmon" if i in (0, 12) else f"Mon{i:02d}"
        image = make_test_card(rng, 252, 352)
        if i == 12:
            image = first.copy()
            cv2.circle(image, (225, 200), 7, (40, 40, 40), -1)  # the set symbol differs
        if i == 0:
            first = image
        cv2.imwrite(str(folder / f"{card_id}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 92])
        rows.append({"card_id": card_id, "name": name, "set_id": card_id.split("-")[0],
                     "set_name": f"Test Set {i // 12 + 1}", "number": str(i % 12 + 1), "image_path": f"{card_id}.jpg"})

    with open(folder / "cards.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return folder


@pytest.fixture(scope="session")
def tiny_gallery(tmp_path_factory, tiny_contract, synthetic_cards) -> Path:
    from pokedge.backends.onnx import OnnxBackend
    from pokedge.contract import load_contract
    from pokedge.gallery.build import build_gallery, read_cards_csv

    rows = read_cards_csv(synthetic_cards / "cards.csv")
    backend = OnnxBackend(load_contract(tiny_contract))
    out = tmp_path_factory.mktemp("gallery") / "tiny"
    build_gallery(rows, backend, out)
    return out


@pytest.fixture()
def tiny_recognizer(tiny_contract, tiny_gallery):
    from pokedge.recognition.runtime import RuntimeSources, open_recognizer

    recognizer = open_recognizer(RuntimeSources(tiny_contract, tiny_gallery), backend="onnx")
    yield recognizer
    recognizer.backend.close()
