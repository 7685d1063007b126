"""The systemd unit (systemd-analyze verify, required settings) and scripts/install.sh."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from service_support import REPO

UNIT = REPO / "systemd" / "pokedge.service"
INSTALL = REPO / "scripts" / "install.sh"


def unit_settings() -> dict[str, list[str]]:
    """Every Key=value of the unit as lists (a key may repeat), keyed by 'Section.Key'."""
    settings: dict[str, list[str]] = {}
    section = ""
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        settings.setdefault(f"{section}.{key}", []).append(value)
    return settings


def test_unit_passes_systemd_analyze(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd provides it)")
    # verify checks that ExecStart exists, so point it at this environment's pokedge entry point.
    entry = Path(sys.executable).parent / "pokedge"
    if not entry.exists():
        pytest.skip(f"no pokedge entry point at {entry}; install with pip install -e .")
    unit = tmp_path / "pokedge.service"
    unit.write_text(UNIT.read_text().replace("/opt/pokedge/venv/bin/pokedge", str(entry)))

    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, result.stderr
    problems = [line for line in result.stderr.splitlines() if "pokedge.service" in line]
    assert problems == [], "\n".join(problems)


@pytest.mark.parametrize("key, value", [
    ("Service.Type", "notify"),
    ("Service.Restart", "on-failure"),
    ("Service.User", "pokedge"),
    ("Service.SupplementaryGroups", "video"),
    ("Service.ExecReload", "/bin/kill -HUP $MAINPID"),
    ("Service.NoNewPrivileges", "yes"),
    ("Install.WantedBy", "multi-user.target"),
])
def test_unit_setting(key, value):
    assert unit_settings().get(key) == [value]


def test_unit_watchdog_outlasts_a_frame():
    watchdog = int(unit_settings()["Service.WatchdogSec"][0])
    # The loop pings every quarter of the timeout and blocks at most one read timeout (1 s) plus one frame.
    assert 10 <= watchdog <= 120


def test_unit_state_directory_and_hailort_log():
    settings = unit_settings()
    assert settings["Service.StateDirectory"][0].split()[0] == "pokedge"
    environment = settings["Service.Environment"]
    assert "HAILORT_LOGGER_PATH=%S/pokedge/hailort" in environment
    assert "pokedge/hailort" in settings["Service.StateDirectory"][0].split()


def test_unit_keeps_hailort_socket_and_devices_reachable():
    settings = unit_settings()
    for key in ("PrivateTmp", "DynamicUser", "PrivateDevices"):
        assert f"Service.{key}" not in settings, f"{key} hides /tmp/hailort_uds.sock or the device nodes"


def test_unit_exec_start_uses_config():
    exec_start = unit_settings()["Service.ExecStart"][0]
    assert exec_start == "/opt/pokedge/venv/bin/pokedge serve --config /etc/pokedge/config.toml"


def test_install_script_syntax():
    result = subprocess.run(["bash", "-n", str(INSTALL)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_install_script_shellcheck():
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed")
    result = subprocess.run([shellcheck, str(INSTALL)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_install_dry_run_steps():
    result = subprocess.run(["bash", str(INSTALL), "--dry-run", "--no-start", "--prefix", "/opt/pe"],
                            capture_output=True, text=True, timeout=60)
    out = result.stdout

    assert result.returncode == 0, result.stderr
    assert "python3-picamera2" in out
    assert "useradd --system --user-group --home-dir /var/lib/pokedge" in out
    assert "usermod --append --groups video pokedge" in out
    assert "python3 -m venv --system-site-packages /opt/pe/venv" in out
    assert "/opt/pe/venv/bin/pip install -e /opt/pe/src" in out
    assert "systemctl enable pokedge.service" in out
    assert "install systemd/pokedge.service as /etc/systemd/system/pokedge.service" in out
    assert "enable --now pokedge-sync.timer" not in out.split("pokedge is installed")[0]
    assert "+ systemctl restart pokedge.service" not in out


def test_install_default_config_is_valid():
    import tomllib

    from pokedge.service.config import build_config

    text = subprocess.run(["bash", str(INSTALL), "--print-config"], capture_output=True, text=True,
                          check=True).stdout
    config = build_config(tomllib.loads(text), {}, "install.sh default config")

    assert config.source == "picamera2"
    assert config.http == "127.0.0.1:8765"
    assert config.camera.af_mode == "continuous"
    assert config.tracker.confirm_frames == 3


def test_install_rejects_unknown_option():
    result = subprocess.run(["bash", str(INSTALL), "--frobnicate"], capture_output=True, text=True)
    assert result.returncode == 2
    assert "unknown option --frobnicate" in result.stderr
