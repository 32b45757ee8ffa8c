"""nightear knows its own event stores (SQLite's application_id and user_version, set when it
creates one) and refuses any other file without writing a byte, saying what the file is; the
commands that only read open read-only; export-labelled copies only clips nightear wrote."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import uuid
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from nightear.sinks.clips import clip_name
from nightear.sinks.store import APPLICATION_ID, SCHEMA, SCHEMA_VERSION, EventStore, StoredEvent
from tests.conftest import run_cli

START = "2026-12-02T00:47:11.250+00:00"


def event(clip: str | None = None, event_id: str | None = None) -> StoredEvent:
    return StoredEvent(event_id or str(uuid.uuid4()), "post-7", "closed", START, START, 0.99, 0.97, 9,
                       "nightear-drone-3.4.0", "0" * 64, clip)


def foreign_store(path: Path) -> Path:
    """Another program's SQLite file that happens to have an `events` table of its own."""
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, what TEXT, at TEXT)")
        db.execute("INSERT INTO events VALUES (1, 'backup', '2026-12-01')")
    db.close()
    return path


def fingerprint(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.iterdir()) if p.is_file()}


def test_a_store_nightear_creates_carries_its_mark(tmp_path: Path) -> None:
    EventStore(tmp_path / "events.db").close()
    with sqlite3.connect(tmp_path / "events.db") as db:
        assert db.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    db.close()


def test_every_command_refuses_another_programs_file_without_writing_a_byte(tmp_path: Path) -> None:
    db = foreign_store(tmp_path / "app.db")
    config = tmp_path / "unit.yaml"
    config.write_text(f"store:\n  path: {db}\nclips:\n  folder: {tmp_path / 'clips'}\n")
    before = fingerprint(tmp_path)
    said = "not a nightear event store: another program's SQLite database (no application_id; tables events)"
    for args in (["events", "--db", str(db)], ["events", "--json", "--db", str(db)],
                 ["label", "12345678", "drone", "--db", str(db)],
                 ["export-labelled", str(tmp_path / "out"), "--config", str(config)],
                 ["listen", "--config", str(config), "--duration", "1"]):
        result = run_cli(*args)
        assert result.returncode == 2 and "Traceback" not in result.stderr, (args, result.stderr)
        assert f"nightear: error: {db}: {said}" in result.stderr, (args, result.stderr)
        assert fingerprint(tmp_path) == before, args  # no column, table, WAL, lock or clips folder
    check = run_cli("check", "--config", str(config))
    assert check.returncode == 2 and f"store.path {db}: {said}" in check.stderr
    assert "store: ok" not in check.stdout
    assert fingerprint(tmp_path)[db.name] == before[db.name]


def test_what_a_file_that_is_no_store_is_gets_said(tmp_path: Path) -> None:
    wav = tmp_path / "night.wav"
    sf.write(wav, np.zeros(1600, dtype=np.float32), 16000)
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    cases = {str(tmp_path): "is a folder, not an event store", str(wav): "not an SQLite database",
             str(empty): "an empty file"}
    for path, said in cases.items():
        for args in (["events", "--db", path], ["events", "--json", "--db", path],
                     ["export-labelled", str(tmp_path / "out"), "--db", path]):
            result = run_cli(*args)
            assert result.returncode == 2 and f"nightear: error: {path}: " in result.stderr, result.stderr
            assert said in result.stderr and "Traceback" not in result.stderr, (args, result.stderr)
    assert empty.read_bytes() == b"" and not (tmp_path / "out").exists()


def test_a_store_written_before_the_mark_still_opens_and_is_marked_by_its_next_writer(
        tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    with sqlite3.connect(db) as old:  # as an earlier nightear left it: no mark, no newer columns
        old.executescript(SCHEMA.replace(",\n    bearing_deg REAL,\n    bearing_spread_deg REAL,\n    "
                                         "elevation_deg REAL,\n    bearing_mirror_deg REAL,\n    "
                                         "interrupted INTEGER NOT NULL DEFAULT 0", ""))
        old.execute("INSERT INTO events (id, node, state, start, end, peak_confidence, mean_confidence, "
                    "windows, model, model_sha256) VALUES ('1a2b3c4d-0000', 'post-7', 'closed', ?, ?, "
                    "0.99, 0.97, 9, 'm', 'x')", (START, START))
    old.close()
    before = db.read_bytes()
    listed = run_cli("events", "--db", str(db))
    assert listed.returncode == 0 and "1a2b3c4d-0000" in listed.stdout, listed.stderr
    assert db.read_bytes() == before  # read-only
    judged = run_cli("label", "1a2b3c4d", "drone", "--db", str(db))
    assert judged.returncode == 0, judged.stderr
    with sqlite3.connect(db) as marked:
        assert marked.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    marked.close()
    assert "verdict drone" in run_cli("events", "--db", str(db)).stdout


def test_export_copies_only_clips_nightear_wrote_in_its_clips_folder(tmp_path: Path) -> None:
    clips, secret = tmp_path / "clips", tmp_path / "secret.txt"
    clips.mkdir()
    secret.write_text("not a recording\n")
    own, named_outside, linked, other_name = (str(uuid.uuid4()) for _ in range(4))
    good = clips / f"{clip_name(START, own)}.wav"
    sf.write(good, np.zeros(16000, dtype=np.float32), 16000)
    outside = tmp_path / f"{clip_name(START, named_outside)}.wav"
    outside.write_bytes(good.read_bytes())
    link = clips / f"{clip_name(START, linked)}.wav"
    os.symlink(secret, link)
    store = EventStore(tmp_path / "events.db")  # as one a stranger may write could hold
    for event_id, clip in ((own, good), (named_outside, outside), (linked, link), (other_name, secret)):
        store.save(event(str(clip), event_id))
        store.set_verdict(event_id, "drone", START)
    store.close()
    config = tmp_path / "unit.yaml"
    config.write_text(f"store:\n  path: {tmp_path / 'events.db'}\nclips:\n  folder: {clips}\n")
    out = tmp_path / "out"
    result = run_cli("export-labelled", str(out), "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert "exported 1 clips (1 drone)" in result.stderr
    copied = sorted(p.name for p in (out / "post-7").iterdir())
    assert copied == [good.name]
    assert f"its clip {outside} is not in the clips folder {clips}: not copied" in result.stderr
    assert f"its clip {link} is not in the clips folder" in result.stderr
    assert f"its clip {secret} is not the name nightear gives" in result.stderr
    assert "not a recording" not in "".join(p.read_text(errors="replace") for p in out.rglob("*.csv"))
    alone = run_cli("export-labelled", str(tmp_path / "out2"), "--db", str(tmp_path / "events.db"))
    assert "no clips.folder configured" in alone.stderr and not (tmp_path / "out2").exists()


@pytest.mark.parametrize("command", ["events", "export-labelled"])
def test_commands_that_only_read_never_write_the_store(tmp_path: Path, command: str) -> None:
    db = tmp_path / "events.db"
    store = EventStore(db)
    store.save(event())
    store.close()
    before = fingerprint(tmp_path)
    args = [command, "--db", str(db)] if command == "events" else \
        [command, str(tmp_path / "o"), "--db", str(db)]
    assert run_cli(*args).returncode == 0
    # a WAL store's reader may leave SQLite's -shm and an empty -wal beside it, never a change in it
    after = fingerprint(tmp_path)
    assert after[db.name] == before[db.name]
    assert not (tmp_path / f"{db.name}-wal").exists() or (tmp_path / f"{db.name}-wal").stat().st_size == 0


def test_a_store_from_a_newer_nightear_is_listed_but_not_written(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    store = EventStore(db)
    store.save(event(event_id="1a2b3c4d-newer"))
    store.close()
    with sqlite3.connect(db) as newer:
        newer.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    newer.close()
    assert "1a2b3c4d-newer" in run_cli("events", "--db", str(db)).stdout
    before = db.read_bytes()
    result = run_cli("label", "1a2b3c4d", "drone", "--db", str(db))
    assert result.returncode == 2 and f"{db}: written by a newer nightear (store schema " \
        f"{SCHEMA_VERSION + 1}, this one writes {SCHEMA_VERSION})" in result.stderr, result.stderr
    assert db.read_bytes() == before


def test_a_row_someone_else_edited_is_named_not_a_traceback(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    store = EventStore(db)
    judged = event(event_id="1a2b3c4d-edited")
    store.save(judged)
    store.set_verdict(judged.id, "drone", START)
    store.close()
    with sqlite3.connect(db) as other:
        other.execute("UPDATE events SET peak_confidence = 'high', clip = 7")
    other.close()
    config = tmp_path / "unit.yaml"
    config.write_text(f"store:\n  path: {db}\nclips:\n  folder: {tmp_path}\n")
    for args in (["events", "--db", str(db)], ["events", "--json", "--db", str(db)],
                 ["export-labelled", str(tmp_path / "out"), "--config", str(config)],
                 ["label", "1a2b3c4d", "not-drone", "--db", str(db)]):
        result = run_cli(*args)
        assert result.returncode == 2 and "Traceback" not in result.stderr, (args, result.stderr)
        assert f"nightear: error: {db}: event '1a2b3c4d-edited' is malformed (Expected `float`, got " \
               "`str` - at `$.peak_confidence`)" in result.stderr, (args, result.stderr)


def test_a_file_holding_only_a_sinks_table_is_taken_as_a_new_store(tmp_path: Path) -> None:
    """An earlier sender could create its table before the daemon's first store: still ours."""
    db = tmp_path / "events.db"
    with sqlite3.connect(db) as early:
        early.execute("CREATE TABLE mqtt_sent (event_id TEXT PRIMARY KEY, state TEXT NOT NULL, "
                      "acked TEXT NOT NULL)")
    early.close()
    listed = run_cli("events", "--db", str(db))
    assert listed.returncode == 2 and "an SQLite database with no events table yet" in listed.stderr
    store = EventStore(db)
    store.save(event(event_id="1a2b3c4d-first"))
    store.close()
    assert "1a2b3c4d-first" in run_cli("events", "--db", str(db)).stdout
