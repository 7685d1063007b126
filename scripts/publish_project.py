#!/usr/bin/env python3
"""Publish a model, its contract and its reference gallery to the S3 project that `pokedge sync` reads.

Examples:

    # a new ONNX student with its gallery, made production for CPU devices
    scripts/publish_project.py --model efficientnet-student-stage2 \\
        --model-file student_stage2_final.onnx --contract student.contract.json --gallery gallery/

    # a new gallery for the same model after a card set release
    scripts/publish_project.py --model efficientnet-student-stage2 --gallery gallery-2026-03/

Credentials come from the standard AWS chain. Only the `pokedge` block of
metadata/project_manifest.json changes.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from pokedge.errors import PokedgeError
from pokedge.sync.config import load_config
from pokedge.sync.publish import PublishRequest, publish
from pokedge.sync.s3 import make_client


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="model name in the manifest, e.g. efficientnet-student-stage2")
    parser.add_argument("--model-file", type=Path, help="the .onnx or .hef file to upload")
    parser.add_argument("--contract", type=Path, help="the model's contract JSON (needed with --model-file)")
    parser.add_argument("--gallery", type=Path, help="gallery folder (embeddings.npy, index.json, metadata.json, "
                                                     "gallery.json) made by this model")
    parser.add_argument("--gallery-name", help="gallery name in the manifest (default: the model name)")
    parser.add_argument("--extra-file", type=Path, action="append", default=[],
                        help="another file devices need beside the model (e.g. a parity record); repeatable")
    parser.add_argument("--release", help="release label shown on devices (default: the UTC time)")
    parser.add_argument("--model-folder", help="key folder for the model, relative to the prefix "
                                               "(default: the manifest's s3_path, else models/<model>/<version>/)")
    parser.add_argument("--gallery-folder", help="key folder for the gallery, relative to the prefix "
                                                 "(default data/reference/<gallery>/<release>/)")
    parser.add_argument("--no-promote", action="store_true", help="upload without making this model production")
    parser.add_argument("--no-validate", action="store_true",
                        help="skip loading the model and gallery before upload (only for testing device-side checks)")
    parser.add_argument("--bucket", help="S3 bucket (default pokemon-card-training-us-east-2)")
    parser.add_argument("--prefix", help="project prefix (default project/pokemon-card-recognition/)")
    parser.add_argument("--region", help="AWS region (default us-east-2)")
    parser.add_argument("--endpoint-url", help="URL of an S3-compatible endpoint")
    parser.add_argument("-v", "--verbose", action="store_true", help="log each upload")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    try:
        config = load_config({"bucket": args.bucket, "prefix": args.prefix, "region": args.region,
                              "endpoint_url": args.endpoint_url})
        request = PublishRequest(
            model=args.model, model_file=args.model_file, contract=args.contract, gallery=args.gallery,
            gallery_name=args.gallery_name, extra_files=args.extra_file, release=args.release,
            promote=not args.no_promote, validate=not args.no_validate, model_folder=args.model_folder,
            gallery_folder=args.gallery_folder)
        extension = publish(make_client(config), config.bucket, config.prefix, request)
    except PokedgeError as exc:
        print(f"publish_project: error: {exc}", file=sys.stderr)
        return 1

    print(f"published release {extension['release']} to s3://{config.bucket}/{config.prefix}; "
          f"production: {extension.get('production')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
