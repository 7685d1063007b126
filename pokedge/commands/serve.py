"""`pokedge serve`: run the device service in the foreground (systemd starts the same command)."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from pokedge.capture.sources import SPEC_HELP
from pokedge.commands.scan import add_runtime_options
from pokedge.service.config import (DEFAULT_CONFIG, DEFAULT_HTTP, RECOGNITION_MODES, build_config,
                                    load_config_file)

_log = logging.getLogger(__name__)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "serve", help="run the camera service: recognize, log and stream every card laid under the camera",
        description="Run the device service in the foreground: read frames, confirm each card once, write the "
                    "scan log and serve the HTTP API. SIGTERM stops it, SIGHUP reloads model and gallery.")
    parser.add_argument("--config", type=Path, metavar="TOML",
                        help=f"config file (default $POKEDGE_CONFIG, else {DEFAULT_CONFIG} when it exists); "
                             f"flags override it")
    parser.add_argument("--source", metavar="SPEC", help=f"frame source: {SPEC_HELP} (default picamera2)")
    parser.add_argument("--http", metavar="HOST:PORT", help=f"address of the HTTP API (default {DEFAULT_HTTP})")
    parser.add_argument("--loop", action="store_true", default=None, help="replay a file or folder source forever")
    parser.add_argument("--as-fast-as-possible", dest="realtime", action="store_false", default=None,
                        help="play a file or folder source without pacing it at its frame rate (for tests)")
    parser.add_argument("--folder-fps", type=float, metavar="FPS",
                        help="frames per second of a dir: source (default 5)")
    parser.add_argument("--confirm-frames", type=int, metavar="K",
                        help="consecutive agreeing frames that confirm a card (default 3)")
    parser.add_argument("--unknown-frames", type=int, metavar="N",
                        help="still frames without a confirmation before a card is reported unknown (default 6)")
    parser.add_argument("--recognition", choices=RECOGNITION_MODES,
                        help="sequential: one frame at a time on the main thread; pipelined: detection and "
                             "embedding of several frames in worker threads; auto (default): pipelined on at "
                             "least 2 usable cores")
    parser.add_argument("--no-images", dest="save_images", action="store_false", default=None,
                        help="do not save JPEGs of unknown and low-confidence cards")
    add_runtime_options(parser)
    parser.set_defaults(func=run, backend=None)


def load_service_config(args: argparse.Namespace):
    """Build the ServiceConfig from the config file and the flags."""
    path = args.config or _default_config_path()
    file_data = load_config_file(path) if path else {}
    overrides = {
        "source": args.source, "http": args.http, "data_dir": args.data_dir, "backend": args.backend,
        "model": args.model, "gallery": args.gallery, "threads": args.threads, "loop": args.loop,
        "realtime": args.realtime, "folder_fps": args.folder_fps, "save_images": args.save_images,
        "recognition": args.recognition, "read_numbers": args.read_numbers,
    }
    tracker = {"confirm_frames": args.confirm_frames, "unknown_frames": args.unknown_frames}
    if args.confirm_frames is not None and args.unknown_frames is None:
        # Keep the default ratio: a card must lie still twice as long as a confirmation takes.
        tracker["unknown_frames"] = 2 * args.confirm_frames
    return build_config(file_data, overrides, str(path) if path else "command line", tracker)


def _default_config_path() -> Path | None:
    env = os.environ.get("POKEDGE_CONFIG")
    if env:
        return Path(env)
    return DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None


def run(args: argparse.Namespace) -> int:
    from pokedge.service.daemon import Daemon

    if args.verbose == 0:
        # A service logs its starts, stops, retries and every scan; the CLI default (warnings only) hides them.
        logging.getLogger("pokedge").setLevel(logging.INFO)

    config = load_service_config(args)
    daemon = Daemon(config)
    daemon.install_signal_handlers()
    return daemon.run()
