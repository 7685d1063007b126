import platform
import subprocess
import sys

from pokedge import cli
from pokedge.heap import fix_mmap_threshold


def _commands(parser) -> set[str]:
    subparsers = next(a for a in parser._actions if a.dest == "command")
    return set(subparsers.choices)


def test_named_command_registers_its_module_only():
    assert _commands(cli.build_parser(["-v", "scan", "--image", "x.jpg"])) == {"scan"}
    assert _commands(cli.build_parser(["versions"])) == {"sync", "versions"}


def test_help_and_unknown_command_register_all():
    every = set(cli.COMMANDS)
    assert _commands(cli.build_parser()) == every
    assert _commands(cli.build_parser(["--help"])) == every
    assert _commands(cli.build_parser(["scn"])) == every


def test_every_command_module_is_mapped():
    assert set(cli.COMMANDS.values()) == set(cli.COMMAND_MODULES)
    for name, module in cli.COMMANDS.items():
        assert name in _commands(cli.build_parser([name])), module


def test_scan_process_skips_sync_and_service_modules():
    code = ("import sys; from pokedge import cli; cli.build_parser(['scan']); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('botocore', 'urllib3') "
            "or m.startswith(('pokedge.sync', 'pokedge.service', 'pokedge.evaluation'))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_mmap_threshold_fixed_once():
    first = fix_mmap_threshold()
    assert fix_mmap_threshold() is first
    if platform.libc_ver()[0] == "glibc":
        assert first is True
