"""Locations of the shipped defaults and of the data folder."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_ROOT.parent

# The shipped default model and gallery live beside the package in a source
# checkout (pip install -e .).
DEFAULT_CONTRACT = REPO_ROOT / "models" / "pokedge-default.contract.json"
DEFAULT_GALLERY = REPO_ROOT / "embeddings" / "default"


def data_dir() -> Path:
    """Return the folder of synced versions (POKEDGE_DATA_DIR, else ~/.local/share/pokedge)."""
    env = os.environ.get("POKEDGE_DATA_DIR")
    if env:
        return Path(env)
    state = os.environ.get("STATE_DIRECTORY")  # set by systemd's StateDirectory=
    if state:
        return Path(state.split(":")[0])
    return Path.home() / ".local" / "share" / "pokedge"
