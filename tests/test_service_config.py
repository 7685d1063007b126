"""Service settings: defaults, the TOML config file, flags on top, and the errors for bad values."""

from __future__ import annotations

from pathlib import Path

import pytest

from pokedge.service.config import ConfigError, build_config, load_config_file, parse_http_address


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_defaults():
    config = build_config({}, {})
    assert config.source == "picamera2"
    assert config.http_address() == ("127.0.0.1", 8765)
    assert config.tracker.confirm_frames == 3
    assert config.camera.main_format == "RGB888"
    assert config.recognition == "auto"


def test_file_values_applied(tmp_path):
    path = write(tmp_path, """
[serve]
source = "opencv:0"
http = "127.0.0.1:9000"
threads = 2
read_timeout = 2
data_dir = "/var/lib/pokedge"

[camera]
main_size = [1280, 720]
lores_size = [640, 360]
af_mode = "manual"
lens_position = 4

[tracker]
confirm_frames = 4
unknown_frames = 8

[scanlog]
save_images = false
min_free_mb = 50
""")
    config = build_config(load_config_file(path), {}, str(path))

    assert config.source == "opencv:0"
    assert config.http_address() == ("127.0.0.1", 9000)
    assert config.threads == 2
    assert config.read_timeout == 2.0
    assert config.data_dir == Path("/var/lib/pokedge")
    assert config.camera.main_size == (1280, 720)
    assert config.camera.lores_size == (640, 360)
    assert config.camera.lens_position == 4.0
    assert config.tracker.confirm_frames == 4
    assert config.save_images is False
    assert config.min_free_mb == 50


def test_flags_override_file(tmp_path):
    path = write(tmp_path, '[serve]\nsource = "opencv:0"\nbackend = "hailo"\n')
    config = build_config(load_config_file(path), {"source": "file:v.avi", "backend": None},
                          tracker_overrides={"confirm_frames": 5, "unknown_frames": 10})

    assert config.source == "file:v.avi"
    assert config.backend == "hailo"
    assert config.tracker.confirm_frames == 5


@pytest.mark.parametrize("text, fragment", [
    ("[serve]\nconfirm = 3\n", "unknown key [serve] confirm"),
    ("[video]\nfps = 3\n", "unknown section(s) video"),
    ("[serve]\nthreads = \"two\"\n", "[serve] threads must be of type int"),
    ("[serve]\nloop = 1\n", "[serve] loop must be true or false"),
    ("[camera]\nmain_size = [1920]\n", "[camera] main_size must be [WIDTH, HEIGHT]"),
    ("[camera]\naf_mode = \"manual\"\n", "lens_position"),
    ("[tracker]\nconfirm_frames = 0\n", "confirm_frames must be at least 1"),
    ("[serve]\nhttp = \"8765\"\n", "not HOST:PORT"),
    ("[serve]\nread_timeout = 0\n", "read_timeout must be a positive"),
    ("[serve]\nrecognition = \"threaded\"\n", "recognition must be one of auto, sequential, pipelined"),
    ("[scanlog]\nkeep = true\n", "unknown key [scanlog] keep"),
    ("[serve\n", "cannot be read"),
])
def test_bad_file_rejected(tmp_path, text, fragment):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as error:
        build_config(load_config_file(path), {}, str(path))
    assert fragment in str(error.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config_file(tmp_path / "absent.toml")


@pytest.mark.parametrize("text, expected", [
    ("127.0.0.1:8765", ("127.0.0.1", 8765)),
    ("[::1]:9000", ("::1", 9000)),
    ("0.0.0.0:80", ("0.0.0.0", 80)),
])
def test_http_address(text, expected):
    assert parse_http_address(text) == expected


@pytest.mark.parametrize("text", ["8765", ":8765", "localhost:http", "127.0.0.1:70000"])
def test_http_address_rejected(text):
    with pytest.raises(ConfigError, match="HOST:PORT"):
        parse_http_address(text)


def test_recognition_from_file_and_flag(tmp_path):
    path = write(tmp_path, '[serve]\nrecognition = "sequential"\n')

    from_file = build_config(load_config_file(path), {}, str(path))
    assert from_file.recognition == "sequential"

    from_flag = build_config(load_config_file(path), {"recognition": "pipelined"})
    assert from_flag.recognition == "pipelined"


def test_recognition_cli_flag(tmp_path):
    import argparse

    from pokedge.commands import serve

    parser = argparse.ArgumentParser()
    serve.register(parser.add_subparsers())
    path = write(tmp_path, '[serve]\nrecognition = "pipelined"\n')

    args = parser.parse_args(["serve", "--config", str(path), "--recognition", "sequential"])
    assert serve.load_service_config(args).recognition == "sequential"

    args = parser.parse_args(["serve", "--config", str(path)])
    assert serve.load_service_config(args).recognition == "pipelined"

    with pytest.raises(SystemExit):
        parser.parse_args(["serve", "--recognition", "threaded"])


def test_read_numbers_file_and_flag(tmp_path):
    import argparse

    from pokedge.commands import serve

    parser = argparse.ArgumentParser()
    serve.register(parser.add_subparsers())
    path = write(tmp_path, "[serve]\nread_numbers = false\n")

    args = parser.parse_args(["serve", "--config", str(path)])
    assert serve.load_service_config(args).read_numbers is False

    args = parser.parse_args(["serve", "--no-read-numbers"])
    assert serve.load_service_config(args).read_numbers is False

    args = parser.parse_args(["serve"])
    assert serve.load_service_config(args).read_numbers is True


def test_strip_extensions_from_file(tmp_path):
    import argparse

    from pokedge.commands import serve

    parser = argparse.ArgumentParser()
    serve.register(parser.add_subparsers())

    args = parser.parse_args(["serve", "--config", str(write(tmp_path, "[serve]\nstrip_extensions = false\n"))])
    assert serve.load_service_config(args).strip_extensions is False

    args = parser.parse_args(["serve"])
    assert serve.load_service_config(args).strip_extensions is True
