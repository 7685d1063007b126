import json

import pytest

from pokedge.errors import GalleryError
from pokedge.evaluation.calibration import Samples, fit
from pokedge.recognition.decision import Thresholds, load_thresholds


def test_missing_file_gives_uncalibrated_defaults(tmp_path, caplog):
    thresholds = load_thresholds(tmp_path, "m:1")
    assert not thresholds.calibrated
    assert "pokedge calibrate" in caplog.text


def test_round_trip(tmp_path):
    Thresholds(match_score=0.7, match_margin=0.02, card_floor=0.3, producer="m:1", calibrated=True).save(
        tmp_path / "thresholds.json")
    loaded = load_thresholds(tmp_path, "m:1")
    assert (loaded.match_score, loaded.match_margin, loaded.card_floor) == (0.7, 0.02, 0.3)


def test_other_producer_refused(tmp_path):
    Thresholds(producer="m:1").save(tmp_path / "thresholds.json")
    with pytest.raises(GalleryError, match="calibrated for model m:1"):
        load_thresholds(tmp_path, "m:2")


def test_bad_value_named(tmp_path):
    (tmp_path / "thresholds.json").write_text(json.dumps(
        {"schema": "pokedge.thresholds/1", "match_score": "high", "match_margin": 0.1, "card_floor": 0.1}))
    with pytest.raises(GalleryError, match="match_score"):
        load_thresholds(tmp_path, "m:1")


def test_fit_separates_known_from_unknown():
    known = Samples(scores=[0.9, 0.88, 0.92, 0.86, 0.6], margins=[0.1, 0.08, 0.12, 0.09, 0.01],
                    correct=[True, True, True, True, False])
    unknown = Samples(scores=[0.7, 0.72, 0.65, 0.74], margins=[0.01, 0.02, 0.015, 0.03], correct=[False] * 4)
    background = Samples(scores=[0.2, 0.25, 0.3, 0.8], margins=[0.05, 0.1, 0.02, 0.01], correct=[False] * 4)
    thresholds, report = fit(known, unknown, background)
    assert report["unknown_matched"] == 0.0
    assert report["known_correct_matched"] == pytest.approx(0.8)
    assert report["known_wrong_matched"] == 0.0
    assert report["background_matched"] == 0.0
    assert thresholds.card_floor <= min(known.scores) + 0.01  # keeps (nearly) every card quad
