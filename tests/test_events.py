"""`nightear events` reads the store and changes nothing: damaged, empty, foreign or
read-only files are named on one line and left as they were."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from nightear.sinks.store import EventStore, StoredEvent
from tests.conftest import REPO, run_cli


def stored_events(path: Path, count: int) -> Path:
    store = EventStore(path)
    for i in range(count):
        second = f"2026-01-01T00:{i // 60:02d}:{i % 60:02d}"
        store.save(StoredEvent(f"event-{i:04d}", "post-7", "closed", f"{second}.000+00:00",
                               f"{second}.900+00:00", 0.99, 0.97, 3, "nightear-drone-2.0.0", "0" * 64))
    store.close()
    return path


def one_error_line(result: subprocess.CompletedProcess[str], needle: str) -> None:
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert any(line.startswith("nightear") and needle in line for line in lines), result.stderr


def test_a_damaged_store_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    db = stored_events(tmp_path / "events.db", 400)
    data = bytearray(db.read_bytes())
    page = 4096
    data[3 * page : 5 * page] = b"\xa5" * (2 * page)  # two pages of the table overwritten
    db.write_bytes(bytes(data))
    result = run_cli("events", "--db", str(db))
    one_error_line(result, f"nightear: error: {db}: cannot read the event store (database disk image "
                           "is malformed)")


def test_an_age_too_far_back_is_refused() -> None:
    result = run_cli("events", "--db", "events.db", "--since", "99999999999d")
    one_error_line(result, "--since: 99999999999d reaches back before year 1")


@pytest.mark.parametrize("kind", ["empty", "foreign"])
def test_a_file_that_is_no_event_store_is_named_and_left_unchanged(tmp_path: Path, kind: str) -> None:
    path = tmp_path / f"{kind}.db"
    if kind == "empty":
        path.write_bytes(b"")
    else:
        with sqlite3.connect(path) as other:
            other.execute("CREATE TABLE photos (name TEXT)")
            other.execute("INSERT INTO photos VALUES ('dog.jpg')")
        other.close()
    before = path.read_bytes()
    result = run_cli("events", "--db", str(path))
    one_error_line(result, f"nightear: error: {path}: not a nightear event store: " + (
        "an empty file" if kind == "empty" else "another program's SQLite database"))
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no -wal or -shm either


def test_a_user_who_can_only_read_the_store_lists_it(tmp_path: Path) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:  # outside pytest's root-only temp folders
        db = stored_events(Path(folder) / "events.db", 3)
        os.chmod(folder, 0o555)
        os.chmod(db, 0o444)
        # root writes anywhere: list as nobody, who may only read (setpriv is in util-linux)
        as_reader = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] \
            if os.geteuid() == 0 else []
        before = db.read_bytes()
        result = subprocess.run([*as_reader, sys.executable, "-m", "nightear", "events", "--db", str(db)],
                                capture_output=True, text=True, cwd=REPO, timeout=120,
                                env={**os.environ, "HOME": folder})
        os.chmod(folder, 0o755)
        assert result.returncode == 0, result.stderr
        assert [line.split()[-1] for line in result.stdout.splitlines()] == [
            "event-0000", "event-0001", "event-0002"]
        assert db.read_bytes() == before
