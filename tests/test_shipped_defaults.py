"""The shipped model and gallery belong together and load as `pokedge scan` loads them."""

import json

import pytest

from pokedge import paths
from pokedge.contract import file_sha256, load_contract
from pokedge.gallery.store import check_compatible, load_gallery
from pokedge.recognition.decision import load_thresholds


def test_model_matches_its_checksum():
    contract = load_contract(paths.DEFAULT_CONTRACT)
    assert contract.sha256 == file_sha256(contract.model_path)


def test_model_contract_is_the_original_io():
    contract = load_contract(paths.DEFAULT_CONTRACT)
    assert contract.input.name == "input"
    assert contract.output.name == "embeddings"
    assert contract.output.dim == 768
    assert contract.input.normalization == "mean_std"


def test_gallery_was_built_by_the_model():
    contract = load_contract(paths.DEFAULT_CONTRACT)
    gallery = load_gallery(paths.DEFAULT_GALLERY)
    check_compatible(gallery, contract.model_id, contract.output.dim, contract.sha256)
    assert len(gallery.cards) == 2726


def test_thresholds_are_calibrated_for_the_gallery():
    gallery = load_gallery(paths.DEFAULT_GALLERY)
    thresholds = load_thresholds(paths.DEFAULT_GALLERY, gallery.producer)
    assert thresholds.calibrated
    assert thresholds.card_floor < thresholds.match_score


def test_metadata_has_names_sets_and_numbers():
    metadata = json.loads((paths.DEFAULT_GALLERY / "metadata.json").read_text())
    charizard = metadata["base1-4"]
    assert charizard["name"] == "Charizard"
    assert charizard["set"] == "base1"
    assert charizard["number"] == "4"


def test_int8_copy_matches_its_checksum_and_model():
    fp32 = load_contract(paths.DEFAULT_CONTRACT)
    int8 = load_contract(paths.DEFAULT_CONTRACT.parent / "pokedge-default-int8.contract.json")

    assert int8.sha256 == file_sha256(int8.model_path)
    assert int8.derived_from == fp32.sha256
    assert int8.model_id == fp32.model_id


def test_int8_copy_serves_the_shipped_gallery():
    int8 = load_contract(paths.DEFAULT_CONTRACT.parent / "pokedge-default-int8.contract.json")
    gallery = load_gallery(paths.DEFAULT_GALLERY)

    check_compatible(gallery, int8.model_id, int8.output.dim, int8.derived_from)
