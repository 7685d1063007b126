"""Same-art reprint pairs: found from the scans' art boxes, then scored on rendered scenes."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from pokedge.evaluation.reprints import evaluate_reprints
from pokedge.gallery.same_art import art_signature, same_art_pairs
from pokedge.gallery.build import read_cards_csv


def test_pairs_find_only_fixture_reprint(synthetic_cards):
    rows = read_cards_csv(synthetic_cards / "cards.csv")

    pairs = same_art_pairs(rows)

    assert [(p.first.card.card_id, p.second.card.card_id) for p in pairs] == [("test1-1", "test2-1")]
    assert pairs[0].similarity > 0.99


def test_pairs_skip_other_art(synthetic_cards, tmp_path):
    rows = read_cards_csv(synthetic_cards / "cards.csv")
    # Give a card with other art the reprint's name: one name in two sets, but new art.
    renamed = [r for r in rows if r.card.card_id in ("test1-1", "test2-5")]
    renamed[1].card.name = renamed[0].card.name

    assert same_art_pairs(renamed) == []


def test_art_signature_ignores_brightness_and_size():
    rng = np.random.default_rng(3)
    card = rng.integers(0, 255, size=(352, 252, 3), dtype=np.uint8)
    brighter = np.clip(card.astype(np.int16) * 0.8 + 30, 0, 255).astype(np.uint8)
    import cv2
    larger = cv2.resize(brighter, (504, 704), interpolation=cv2.INTER_CUBIC)

    similarity = float(np.sum(art_signature(card) * art_signature(larger)))

    assert similarity > 0.95


def test_evaluation_counts_every_scene_of_both_prints(tiny_recognizer, synthetic_cards):
    rows = read_cards_csv(synthetic_cards / "cards.csv")
    pairs = same_art_pairs(rows)

    report = evaluate_reprints(tiny_recognizer, pairs, views=2, seed=5).as_dict()

    assert report["pairs"] == 1
    assert report["queries"] == 4
    assert report["right_print"] + report["other_print"] <= report["detected"] <= 1.0
    answered_wrong = round((1 - report["right_print"]) * report["queries"])
    assert len(report["misses"]) == answered_wrong


def test_eval_command_prints_the_reprint_figures(tiny_contract, tiny_gallery, synthetic_cards):
    command = [sys.executable, "-m", "pokedge", "eval", "--reprints", "1", "--json",
               "--model", str(tiny_contract), "--gallery", str(tiny_gallery),
               "--cards", str(synthetic_cards / "cards.csv")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)

    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["reprints"]["pairs"] == 1
    assert result["reprints"]["queries"] == 2
