"""`pokedge export`: write the collection (every confirmed card with its quantity) from the scan log."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from pokedge import paths
from pokedge.errors import InputError
from pokedge.service.daemon import SCANLOG_DIR
from pokedge.service.scanlog import DB_NAME, ScanLog

FIELDS = ("card_id", "name", "set_id", "set_name", "number", "quantity", "first_seen", "last_seen")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "export", help="write the collection of confirmed cards as CSV or JSON",
        description="Write one row per confirmed card from the scan log of 'pokedge serve': card id, name, set, "
                    "number, quantity (times confirmed) and first and last seen (ISO 8601, UTC).")
    parser.add_argument("--format", choices=("csv", "json"), default="csv", help="output format (default csv)")
    parser.add_argument("--out", type=Path, metavar="PATH", help="file to write (default: standard output)")
    parser.add_argument("--data-dir", type=Path,
                        help="data folder of the service (default $STATE_DIRECTORY or ~/.local/share/pokedge)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    folder = (args.data_dir or paths.data_dir()) / SCANLOG_DIR
    if not (folder / DB_NAME).is_file():
        raise InputError(f"no scan log at {folder / DB_NAME}; run 'pokedge serve' first, or pass the service's "
                         f"--data-dir (under systemd: /var/lib/pokedge)")
    rows = ScanLog(folder).collection()

    if args.out:
        with open(args.out, "w", newline="", encoding="utf-8") as handle:
            _write(rows, args.format, handle)
        print(f"wrote {len(rows)} card(s) to {args.out}", file=sys.stderr)
    else:
        _write(rows, args.format, sys.stdout)
    return 0


def _write(rows: list[dict], fmt: str, handle) -> None:
    if fmt == "json":
        json.dump([{name: row[name] for name in FIELDS} for row in rows], handle, indent=1)
        handle.write("\n")
        return
    writer = csv.DictWriter(handle, fieldnames=FIELDS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
