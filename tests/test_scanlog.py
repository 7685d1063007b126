"""The SQLite scan log: records, paging, images, the collection, and a full disk."""

from __future__ import annotations

import errno
import logging
import sqlite3
import time

import numpy as np
import pytest

from pokedge.service import scanlog as scanlog_module
from pokedge.service.scanlog import DB_NAME, ScanLog, ScanLogError


def record(state: str = "confirmed", card_id: str | None = "base1-4", when: float | None = None, **extra) -> dict:
    return {"time": when if when is not None else time.time(), "state": state, "card_id": card_id,
            "name": "Charizard" if card_id else None, "set_id": "base1" if card_id else None,
            "set_name": "Base", "number": "4", "score": 0.93, "margin": 0.2, "track_id": 7, "frame": 120,
            "model": "pokedge-default:1", "gallery": "pokedge-default:1@2026-01-01T00:00:00Z",
            "version": "v42", "backend": "onnx", "alternatives": [{"card_id": "base1-4", "score": 0.93}], **extra}


@pytest.fixture
def log(tmp_path):
    scan_log = ScanLog(tmp_path / "scanlog", min_free_bytes=0).open()
    yield scan_log
    scan_log.close()


def test_record_written_with_versions(log):
    log.add(record())
    assert log.flush()

    [row] = log.scans()
    assert row["state"] == "confirmed"
    assert row["card_id"] == "base1-4"
    assert row["model"] == "pokedge-default:1"
    assert row["gallery"].startswith("pokedge-default:1@")
    assert row["version"] == "v42"
    assert row["alternatives"] == [{"card_id": "base1-4", "score": 0.93}]
    assert row["iso_time"].endswith("Z")
    assert log.stats()["written"] == 1


def test_scans_paged_newest_first(log):
    for i in range(7):
        log.add(record(card_id=f"base1-{i}", when=1000.0 + i))
    log.flush()

    first = log.scans(limit=3)
    second = log.scans(limit=3, offset=3)

    assert [r["card_id"] for r in first] == ["base1-6", "base1-5", "base1-4"]
    assert [r["card_id"] for r in second] == ["base1-3", "base1-2", "base1-1"]
    assert log.count() == 7


def test_scans_filtered_by_state(log):
    log.add(record())
    log.add(record(state="unknown_card", card_id=None))
    log.flush()

    assert [r["state"] for r in log.scans(state="unknown_card")] == ["unknown_card"]
    assert log.count("confirmed") == 1


def test_image_saved_for_unknown(log):
    crop = np.full((352, 252, 3), 128, np.uint8)
    log.add(record(state="unknown_card", card_id=None), crop)
    log.flush()

    [row] = log.scans()
    path = log.image_path(row)
    assert path is not None and path.is_file()
    assert path.read_bytes()[:2] == b"\xff\xd8"
    assert row["image"].startswith("images/")
    assert log.stats()["images"] == 1


def test_image_path_stays_inside_folder(log):
    assert log.image_path({"image": "../../etc/passwd"}) is None
    assert log.image_path({"image": None}) is None


def test_collection_counts_confirmed_cards(log):
    log.add(record(card_id="base1-4", when=1000.0))
    log.add(record(card_id="base1-4", when=2000.0))
    log.add(record(card_id="base1-2", when=1500.0, name="Blastoise", number="2"))
    log.add(record(state="low_confidence", card_id="base1-4", when=3000.0))
    log.add(record(state="unknown_card", card_id=None, when=3000.0))
    log.flush()

    rows = {row["card_id"]: row for row in log.collection()}

    assert set(rows) == {"base1-4", "base1-2"}
    assert rows["base1-4"]["quantity"] == 2
    assert rows["base1-4"]["first_seen"] == "1970-01-01T00:16:40.000Z"
    assert rows["base1-4"]["last_seen"] == "1970-01-01T00:33:20.000Z"
    assert rows["base1-2"]["name"] == "Blastoise"


def test_log_survives_reopen(tmp_path):
    first = ScanLog(tmp_path, min_free_bytes=0).open()
    first.add(record())
    first.close()

    second = ScanLog(tmp_path, min_free_bytes=0).open()
    assert second.count() == 1
    second.close()


def test_add_before_open_rejected(tmp_path):
    with pytest.raises(ScanLogError, match="not open"):
        ScanLog(tmp_path).add(record())


def test_unwritable_folder(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ScanLogError, match="cannot open the scan log"):
        ScanLog(blocker / "scanlog").open()


def test_newer_schema_rejected(tmp_path):
    db = sqlite3.connect(tmp_path / DB_NAME)
    db.execute("PRAGMA user_version=99")
    db.close()
    with pytest.raises(ScanLogError, match="newer than this pokedge"):
        ScanLog(tmp_path).open()


class TinyDisk:
    """Connects with a page limit, so SQLite fails with SQLITE_FULL as on a full disk."""

    def __init__(self):
        self.max_pages = 1_000_000
        self.connections: list[sqlite3.Connection] = []

    def __call__(self, *args, **kwargs):
        db = sqlite3.connect(*args, check_same_thread=False, **kwargs)
        db.execute(f"PRAGMA max_page_count={self.max_pages}")
        self.connections.append(db)
        return db

    def limit(self, pages: int) -> None:
        self.max_pages = pages
        for db in self.connections:
            try:
                db.execute(f"PRAGMA max_page_count={pages}")
            except sqlite3.ProgrammingError:  # closed by the scan log after a failure
                pass


def test_disk_full_keeps_records_and_logs_once(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(scanlog_module, "RETRY_SECONDS", 0.1)
    disk = TinyDisk()
    log = ScanLog(tmp_path, min_free_bytes=0, connect=disk).open()
    log.add(record())
    assert log.flush()
    pages = sqlite3.connect(tmp_path / DB_NAME).execute("PRAGMA page_count").fetchone()[0]

    disk.limit(pages)  # no room for one more page
    caplog.set_level(logging.ERROR, logger="pokedge.service.scanlog")
    big = "x" * 20_000  # a record larger than a page
    for i in range(20):
        log.add(record(card_id=f"base1-{i}", name=big))
    assert not log.flush(timeout=1.0)
    time.sleep(0.5)  # several retries happen meanwhile

    stats = log.stats()
    assert stats["pending"] == 20
    assert stats["write_errors"] >= 2
    assert "full" in stats["last_error"]
    failures = [r for r in caplog.records if "scan log write failed" in r.getMessage()]
    assert len(failures) == 1, "the error must be logged once a minute, not per record or retry"

    disk.limit(1_000_000)  # space freed: the next retry writes everything, in order
    deadline = time.monotonic() + 5
    while log.stats()["pending"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert log.stats()["pending"] == 0
    assert log.count() == 21
    assert [r["card_id"] for r in log.scans(limit=2)] == ["base1-19", "base1-18"]
    log.close()


def test_image_write_failure_keeps_record(tmp_path, caplog, monkeypatch):
    def no_space(path, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(scanlog_module, "_write_file", no_space)
    caplog.set_level(logging.ERROR, logger="pokedge.service.scanlog")
    log = ScanLog(tmp_path, min_free_bytes=0).open()
    for _ in range(5):
        log.add(record(state="unknown_card", card_id=None), np.zeros((64, 48, 3), np.uint8))
    log.flush()

    assert log.count() == 5
    assert all(row["image"] is None for row in log.scans())
    assert log.stats()["images_skipped"] == 5
    assert len([r for r in caplog.records if "cannot save scan image" in r.getMessage()]) == 1
    log.close()


def test_low_free_space_skips_images(tmp_path):
    log = ScanLog(tmp_path, min_free_bytes=1 << 62).open()
    log.add(record(state="low_confidence"), np.zeros((64, 48, 3), np.uint8))
    log.flush()

    assert log.count() == 1
    assert log.scans()[0]["image"] is None
    assert log.stats()["images_skipped"] == 1
    log.close()


def test_images_off(tmp_path):
    log = ScanLog(tmp_path, save_images=False, min_free_bytes=0).open()
    log.add(record(state="unknown_card", card_id=None), np.zeros((64, 48, 3), np.uint8))
    log.flush()

    assert log.scans()[0]["image"] is None
    assert not (tmp_path / "images").exists()
    log.close()
