"""Ranged, parallel, resumable downloads of single objects from the SeaweedFS server, and progress output."""

from __future__ import annotations

import io
import json
import logging
import os

import pytest

from pokedge.sync.errors import TransferError
from pokedge.sync.progress import ByteProgress
from pokedge.sync.transfer import TransferSettings, download_object, partial_bytes, partial_paths

from s3_server import BUCKET, CuttingProxy, new_prefix, s3_client, s3_server

__all__ = ["s3_server"]

MIB = 1 << 20
SETTINGS = TransferSettings(workers=3, part_size=MIB, retries=0, backoff_s=0.01)


@pytest.fixture()
def blob(s3_server):
    """A 3.5 MiB random object; returns (client, key, data, etag)."""
    client = s3_client(s3_server.endpoint)
    key = new_prefix() + "blob.bin"
    data = os.urandom(3 * MIB + MIB // 2)
    etag = client.put_object(Bucket=BUCKET, Key=key, Body=data)["ETag"]
    return client, key, data, etag


def proxied_client(s3_server):
    proxy = CuttingProxy(s3_server.s3_port)
    return proxy, s3_client(proxy.endpoint)


def test_parallel_parts_reassemble(blob, tmp_path):
    client, key, data, etag = blob
    progress = ByteProgress(len(data), stream=io.StringIO())

    part, received = download_object(client, BUCKET, key, tmp_path / "blob.bin", len(data), etag, SETTINGS, progress)

    assert part == tmp_path / "blob.bin.part"
    assert part.read_bytes() == data
    assert received == len(data)
    assert progress.done == len(data)


def test_empty_object(s3_server, tmp_path):
    client = s3_client(s3_server.endpoint)
    key = new_prefix() + "empty"
    etag = client.put_object(Bucket=BUCKET, Key=key, Body=b"")["ETag"]

    part, received = download_object(client, BUCKET, key, tmp_path / "empty", 0, etag, SETTINGS)

    assert part.read_bytes() == b""
    assert received == 0


def test_cut_download_resumes_from_sidecar(blob, s3_server, tmp_path):
    client, key, data, etag = blob
    dest = tmp_path / "blob.bin"
    proxy, cut_client = proxied_client(s3_server)
    try:
        proxy.cut_after(len(data) // 2, reject_new=True)
        with pytest.raises(TransferError, match="kept"):
            download_object(cut_client, BUCKET, key, dest, len(data), etag, SETTINGS)
    finally:
        proxy.close()
    kept = partial_bytes(dest, etag, len(data))
    assert 0 < kept < len(data)

    part, received = download_object(client, BUCKET, key, dest, len(data), etag, SETTINGS)

    assert received == len(data) - kept
    assert part.read_bytes() == data


def test_changed_object_restarts_download(blob, s3_server, tmp_path):
    client, key, data, etag = blob
    dest = tmp_path / "blob.bin"
    proxy, cut_client = proxied_client(s3_server)
    try:
        proxy.cut_after(len(data) // 2, reject_new=True)
        with pytest.raises(TransferError):
            download_object(cut_client, BUCKET, key, dest, len(data), etag, SETTINGS)
    finally:
        proxy.close()
    replacement = os.urandom(len(data))
    new_etag = client.put_object(Bucket=BUCKET, Key=key, Body=replacement)["ETag"]

    assert partial_bytes(dest, new_etag, len(data)) == 0
    part, received = download_object(client, BUCKET, key, dest, len(data), new_etag, SETTINGS)

    assert received == len(data)
    assert part.read_bytes() == replacement


def test_stale_etag_fails_clearly(blob, tmp_path):
    client, key, data, _ = blob

    with pytest.raises(TransferError, match="changed on the server"):
        download_object(client, BUCKET, key, tmp_path / "blob.bin", len(data), '"0123456789abcdef0123456789abcdef"',
                        SETTINGS)


def cut_download(s3_server, key: str, dest, data: bytes, etag: str) -> None:
    """Download half of the object through a proxy that then drops and rejects every connection."""
    proxy, cut_client = proxied_client(s3_server)
    try:
        proxy.cut_after(len(data) // 2, reject_new=True)
        with pytest.raises(TransferError):
            download_object(cut_client, BUCKET, key, dest, len(data), etag, SETTINGS)
    finally:
        proxy.close()


def test_written_record_trusted_same_boot(blob, s3_server, tmp_path):
    client, key, data, etag = blob
    dest = tmp_path / "blob.bin"
    cut_download(s3_server, key, dest, data, etag)
    _, state_path = partial_paths(dest)
    state = json.loads(state_path.read_text())
    synced = sum(part[2] for part in state["parts"])
    # Pretend the last fsync checkpoint recorded nothing, as after a kill right after the first chunks.
    state["parts"] = [[start, end, 0] for start, end, _ in state["parts"]]
    state_path.write_text(json.dumps(state))

    assert synced > 0
    assert partial_bytes(dest, etag, len(data)) == synced


def test_written_record_ignored_after_reboot(blob, s3_server, tmp_path):
    client, key, data, etag = blob
    dest = tmp_path / "blob.bin"
    cut_download(s3_server, key, dest, data, etag)
    _, state_path = partial_paths(dest)
    written_path = state_path.with_name("blob.bin.part.written")
    record = json.loads(written_path.read_text())
    record["boot_id"] = "another-boot"
    written_path.write_text(json.dumps(record))
    state = json.loads(state_path.read_text())
    state["parts"] = [[start, end, 0] for start, end, _ in state["parts"]]
    state_path.write_text(json.dumps(state))

    assert partial_bytes(dest, etag, len(data)) == 0
    part, received = download_object(client, BUCKET, key, dest, len(data), etag, SETTINGS)
    assert received == len(data)
    assert part.read_bytes() == data


def test_damaged_sidecar_restarts(blob, tmp_path):
    client, key, data, etag = blob
    dest = tmp_path / "blob.bin"
    part_path, state_path = partial_paths(dest)
    part_path.write_bytes(b"junk")
    state_path.write_text("{not json")

    part, received = download_object(client, BUCKET, key, dest, len(data), etag, SETTINGS)

    assert received == len(data)
    assert part.read_bytes() == data


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_on_terminal():
    stream = FakeTerminal()
    progress = ByteProgress(4 * MIB, stream=stream)
    progress.start_file("galleries/x/embeddings.npy")
    progress.add(2 * MIB)
    progress.finish()

    text = stream.getvalue()
    assert "\r[" in text
    assert "4.0 MiB" in text
    assert "embeddings.npy" in text


def test_progress_logs_without_terminal(caplog):
    stream = io.StringIO()
    progress = ByteProgress(4 * MIB, stream=stream, log_every_s=0.0)
    with caplog.at_level(logging.INFO, logger="pokedge.sync.progress"):
        progress.add(MIB)
        progress.finish()

    assert stream.getvalue() == ""
    assert "downloaded 1.0 of 4.0 MiB (25%" in caplog.text
