"""Sync settings: defaults, config file, environment and flags, in that order of precedence."""

from __future__ import annotations

from pathlib import Path

import pytest

from pokedge.sync.config import DEFAULT_BUCKET, DEFAULT_PREFIX, DEFAULT_REGION, load_config
from pokedge.sync.errors import ConfigError


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pokedge.toml"
    path.write_text(text)
    return path


def test_defaults_without_file_or_env(tmp_path):
    config = load_config({}, environ={"XDG_CONFIG_HOME": str(tmp_path)})

    assert config.bucket == DEFAULT_BUCKET
    assert config.prefix == DEFAULT_PREFIX
    assert config.region == DEFAULT_REGION
    assert config.endpoint_url is None
    assert config.keep == 3
    assert config.manifest_key == DEFAULT_PREFIX + "metadata/project_manifest.json"


def test_flags_beat_env_beat_file(tmp_path):
    path = write_config(tmp_path, '[sync]\nbucket = "from-file"\nregion = "eu-west-1"\nkeep = 5\nprefix = "p/q"\n')
    environ = {"POKEDGE_S3_BUCKET": "from-env", "POKEDGE_SYNC_KEEP": "4"}

    config = load_config({"bucket": "from-flag", "keep": None}, config_path=path, environ=environ)

    assert config.bucket == "from-flag"
    assert config.keep == 4
    assert config.region == "eu-west-1"
    assert config.prefix == "p/q/"


def test_config_file_from_environment(tmp_path):
    path = write_config(tmp_path, '[sync]\nendpoint_url = "http://127.0.0.1:9"\ndata_dir = "/srv/pokedge"\n')
    config = load_config({}, environ={"POKEDGE_CONFIG": str(path)})

    assert config.endpoint_url == "http://127.0.0.1:9"
    assert config.resolved_data_dir() == Path("/srv/pokedge")


@pytest.mark.parametrize("text, fragment", [
    ("[sync]\nbucket = ", "not valid TOML"),
    ("[sync]\nbukket = 'x'\n", "unknown setting"),
    ("sync = 3\n", "must be a table"),
    ("[sync]\nkeep = 0\n", "'keep' must be at least 1"),
    ("[sync]\nkeep = 'many'\n", "'keep' must be of type int"),
    ("[sync]\ndevice = 'tpu'\n", "'device' must be one of"),
    ("[sync]\nendpoint_url = 'ftp://x'\n", "'endpoint_url' must start with"),
    ("[sync]\nprefix = 'a/../b'\n", "'prefix'"),
])
def test_bad_config_rejected(tmp_path, text, fragment):
    path = write_config(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config({}, config_path=path, environ={})
    assert fragment in str(caught.value)


def test_missing_config_file_rejected(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config({}, config_path=tmp_path / "absent.toml", environ={})
