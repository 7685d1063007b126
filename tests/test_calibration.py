"""Threshold calibration and the held-out evaluation: which cards play the unknown ones, and the commands."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from pokedge.commands.calibrate import read_names
from pokedge.errors import PokedgeError
from pokedge.evaluation.calibration import PERMISSIVE, split_holdout
from pokedge.evaluation.synthetic import evaluate_held_out
from pokedge.gallery.build import read_cards_csv
from pokedge.recognition.decision import Thresholds
from pokedge.recognition.pipeline import Recognizer


def test_given_names_hold_out_every_print(synthetic_cards):
    rows = read_cards_csv(synthetic_cards / "cards.csv")

    kept, held = split_holdout(rows, 0.5, seed=0, names={"Pairmon", "Mon05"})

    assert sorted(row.card.card_id for row in held) == ["test1-1", "test1-6", "test2-1"]
    assert len(kept) + len(held) == len(rows)


def test_random_holdout_is_seeded(synthetic_cards):
    rows = read_cards_csv(synthetic_cards / "cards.csv")

    first = [row.card.card_id for row in split_holdout(rows, 0.25, seed=3)[1]]
    second = [row.card.card_id for row in split_holdout(rows, 0.25, seed=3)[1]]

    assert first == second
    assert first


def test_names_file_outside_the_csv_is_rejected(synthetic_cards, tmp_path):
    rows = read_cards_csv(synthetic_cards / "cards.csv")
    path = tmp_path / "names.txt"
    path.write_text("Nomon\nOthermon\n")

    with pytest.raises(PokedgeError, match="names none of"):
        read_names(path, rows)


def test_names_file_with_every_name_is_rejected(synthetic_cards, tmp_path):
    rows = read_cards_csv(synthetic_cards / "cards.csv")
    path = tmp_path / "names.txt"
    path.write_text("".join(f"{name}\n" for name in {row.card.name for row in rows}))

    with pytest.raises(PokedgeError, match="no known card"):
        read_names(path, rows)


def test_missing_names_file_is_named(synthetic_cards, tmp_path):
    rows = read_cards_csv(synthetic_cards / "cards.csv")

    with pytest.raises(PokedgeError, match="missing.txt"):
        read_names(tmp_path / "missing.txt", rows)


def test_calibrate_with_given_names_writes_thresholds(tiny_contract, tiny_gallery, synthetic_cards, tmp_path):
    gallery = tmp_path / "gallery"
    shutil.copytree(tiny_gallery, gallery)
    names = tmp_path / "names.txt"
    names.write_text("Mon03\nMon04\nUnlisted\n")

    command = [sys.executable, "-m", "pokedge", "calibrate", "--scenes", "8", "--unknown-names", str(names),
               "--model", str(tiny_contract), "--gallery", str(gallery), "--cards", str(synthetic_cards / "cards.csv")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)

    assert done.returncode == 0, done.stderr
    saved = json.loads((gallery / "thresholds.json").read_text())
    assert saved["calibrated"] is True
    assert saved["report"]["holdout"] == "given names"
    assert saved["report"]["unknown_names"] == 2


def test_blur_only_keeps_main_pair(tiny_contract, tiny_gallery, synthetic_cards, tmp_path):
    gallery = tmp_path / "gallery"
    shutil.copytree(tiny_gallery, gallery)
    main_pair = Thresholds(match_score=0.91, match_margin=0.07, card_floor=0.2, calibrated=True,
                           producer="tests-tiny-pool16:1")
    main_pair.save(gallery / "thresholds.json")

    command = [sys.executable, "-m", "pokedge", "calibrate", "--scenes", "8", "--blur-only", "--model",
               str(tiny_contract), "--gallery", str(gallery), "--cards", str(synthetic_cards / "cards.csv")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)

    assert done.returncode == 0, done.stderr
    saved = json.loads((gallery / "thresholds.json").read_text())
    assert (saved["match_score"], saved["match_margin"], saved["card_floor"]) == (0.91, 0.07, 0.2)
    assert "blur_unknown_matched" in saved["report"] or saved["report"].get("blur_check") == "off"


def test_blur_only_needs_calibrated_pair(tiny_contract, tiny_gallery, synthetic_cards, tmp_path):
    gallery = tmp_path / "gallery"
    shutil.copytree(tiny_gallery, gallery)

    command = [sys.executable, "-m", "pokedge", "calibrate", "--scenes", "8", "--blur-only", "--model",
               str(tiny_contract), "--gallery", str(gallery), "--cards", str(synthetic_cards / "cards.csv")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)

    assert done.returncode != 0
    assert "without --blur-only" in done.stderr
    assert not (gallery / "thresholds.json").exists()


def test_held_out_never_self_matched(tiny_recognizer, synthetic_cards):
    rows = read_cards_csv(synthetic_cards / "cards.csv")
    permissive = Recognizer(tiny_recognizer.backend, tiny_recognizer.gallery, PERMISSIVE, index=tiny_recognizer.index)

    report = evaluate_held_out(permissive, rows, {"Mon03", "Mon04"}, count=6, seed=3)

    assert report["names"] == 2
    assert report["matched_n"] == len(report["matched_cards"]) > 0, "permissive thresholds match what they find"
    held_out_ids = {row.card.card_id for row in rows if row.card.name in {"Mon03", "Mon04"}}
    assert not held_out_ids & set(report["matched_cards"]), "the held-out cards must be out of the searched gallery"


def test_held_out_strict_matches_none(tiny_recognizer, synthetic_cards):
    rows = read_cards_csv(synthetic_cards / "cards.csv")
    strict = Recognizer(tiny_recognizer.backend, tiny_recognizer.gallery, Thresholds(0.999, 0.5, -1.0),
                        index=tiny_recognizer.index)

    report = evaluate_held_out(strict, rows, {"Mon03"}, count=4, seed=3)

    assert report["detected"] > 0
    assert report["matched_n"] == 0


def test_held_out_needs_names(tiny_contract, tiny_gallery, synthetic_cards):
    command = [sys.executable, "-m", "pokedge", "eval", "--held-out", "2", "--model", str(tiny_contract),
               "--gallery", str(tiny_gallery), "--cards", str(synthetic_cards / "cards.csv")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)

    assert done.returncode != 0
    assert "--unknown-names" in done.stderr


def test_held_out_prints_figure(tiny_contract, tiny_gallery, synthetic_cards, tmp_path):
    names = tmp_path / "names.txt"
    names.write_text("Mon03\n")
    command = [sys.executable, "-m", "pokedge", "eval", "--held-out", "3", "--unknown-names", str(names), "--json",
               "--model", str(tiny_contract), "--gallery", str(tiny_gallery),
               "--cards", str(synthetic_cards / "cards.csv")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)

    assert done.returncode == 0, done.stderr
    held_out = json.loads(done.stdout)["held_out"]
    assert held_out["n"] == 3
    assert held_out["names"] == 1
