"""An operator judges stored events (`nightear label`) and their clips become a training folder
(`nightear export-labelled`) that the training package reads as it reads any new recordings:
real events from `nightear listen` on a real recording, through the real store and clips."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import soundfile as sf

from nightear_training.data import load_folder
from tests.conftest import FIXTURES, REPO, listen, run_cli

EXAMPLE = REPO / "examples" / "drone-pass.flac"


def unit_with_two_events(fake_mic, tmp_path: Path) -> tuple[Path, dict, dict]:  # type: ignore[no-untyped-def]
    """A unit's config and store holding a drone pass and a false alarm, each with its clip."""
    db, clips = tmp_path / "events.db", tmp_path / "clips"
    config = tmp_path / "unit.yaml"
    base = f"node: post-7\nstore:\n  path: {db}\nclips:\n  folder: {clips}\n  preroll_seconds: 2\n" \
           "audio:\n  buffer_seconds: 60\n"
    config.write_text(base)
    drone = listen(fake_mic(EXAMPLE), "--config", str(config), "--duration", "16")
    assert drone.returncode == 0, drone.stderr
    # an over-eager threshold: the night's crickets and wind raise an event, as a false alarm does
    config.write_text(base + "decision:\n  threshold: 0.02\n")
    night = listen(fake_mic(FIXTURES / "night_background_16k.flac"), "--config", str(config),
                   "--duration", "6")
    assert night.returncode == 0, night.stderr
    config.write_text(base)
    return config, json.loads(drone.stdout.splitlines()[-1]), json.loads(night.stdout.splitlines()[-1])


def test_judged_events_become_a_training_folder_the_trainer_reads(fake_mic, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    config, drone, alarm = unit_with_two_events(fake_mic, tmp_path)
    assert drone["clip"] and alarm["clip"] and drone["id"] != alarm["id"]

    judged = run_cli("label", drone["id"][:8], "drone", "--config", str(config))  # as its clip names it
    assert judged.returncode == 0, judged.stderr
    assert judged.stdout.split()[2:] == [drone["id"], "verdict", "drone"]
    to_judge = run_cli("events", "--unjudged", "--config", str(config)).stdout.splitlines()
    assert len(to_judge) == 1 and to_judge[0].split()[-1] == alarm["id"]
    assert run_cli("label", alarm["id"], "not-drone", "--config", str(config)).returncode == 0
    listed = {e["id"]: e["verdict"] for e in map(json.loads, run_cli(
        "events", "--json", "--config", str(config)).stdout.splitlines())}
    assert listed == {drone["id"]: "drone", alarm["id"]: "not-drone"}

    out = tmp_path / "field-recordings"
    exported = run_cli("export-labelled", str(out), "--config", str(config))
    assert exported.returncode == 0, exported.stderr
    assert f"exported 2 clips (1 background, 1 drone) to {out / 'labels.csv'}" in exported.stderr
    clips = {c.label: c for c in load_folder(out)}
    assert sorted(clips) == ["background", "drone"]
    for label, event in (("drone", drone), ("background", alarm)):
        assert clips[label].relpath == f"post-7/{Path(event['clip']).name}"
        assert clips[label].group.startswith("post-7/") and clips[label].source == out.name
        copied, original = sf.read(clips[label].path)[0], sf.read(event["clip"])[0]
        assert len(copied) > 16000 and np.array_equal(copied, original)
        assert clips[label].path.stat().st_mode & 0o777 == 0o640  # as private as on the unit

    # the operator changes their mind after the quota took the clip: exporting again relabels
    # the copy already exported, and replaces its row instead of adding one
    assert run_cli("label", drone["id"], "not-drone", "--config", str(config)).returncode == 0
    Path(drone["clip"]).unlink()
    again = run_cli("export-labelled", str(out), "--config", str(config))
    assert "exported 2 clips (2 background)" in again.stderr, again.stderr
    assert [c.label for c in load_folder(out)] == ["background", "background"]


def test_wrong_ids_and_lost_clips_are_named_and_change_nothing(fake_mic, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    config, drone, alarm = unit_with_two_events(fake_mic, tmp_path)
    db = tmp_path / "events.db"

    unknown = run_cli("label", "ffffffff", "drone", "--db", str(db))
    assert unknown.returncode == 2 and "Traceback" not in unknown.stderr
    assert f"nightear: error: {db}: no event with id 'ffffffff'" in unknown.stderr
    short = run_cli("label", drone["id"][:4], "drone", "--db", str(db))
    assert short.returncode == 2 and "at least the first 8 characters" in short.stderr
    wrong = run_cli("label", drone["id"], "maybe", "--db", str(db))
    assert wrong.returncode == 2 and "invalid choice: 'maybe'" in wrong.stderr
    foreign = tmp_path / "photos.db"
    with sqlite3.connect(foreign) as other:
        other.execute("CREATE TABLE photos (name TEXT)")
    other.close()
    before = foreign.read_bytes()
    not_ours = run_cli("label", drone["id"], "drone", "--db", str(foreign))
    assert not_ours.returncode == 2 and "not a nightear event store" in not_ours.stderr
    assert foreign.read_bytes() == before
    missing = run_cli("label", drone["id"], "drone", "--db", str(tmp_path / "nope.db"))
    assert missing.returncode == 2 and "nope.db: no such event store" in missing.stderr
    assert not (tmp_path / "nope.db").exists()

    out = tmp_path / "out"
    nothing = run_cli("export-labelled", str(out), "--db", str(db))
    assert nothing.returncode == 0 and "nothing exported" in nothing.stderr and not out.exists()

    assert run_cli("label", alarm["id"], "not-drone", "--db", str(db)).returncode == 0
    Path(alarm["clip"]).unlink()  # as the clips quota deletes the oldest
    gone = run_cli("export-labelled", str(out), "--config", str(config))  # its clips folder
    assert f"skipped {alarm['id'][:8]} (not-drone): {alarm['clip']} is gone" in gone.stderr
    assert "nothing exported" in gone.stderr and not out.exists()

    assert run_cli("label", drone["id"], "drone", "--db", str(db)).returncode == 0
    out.mkdir()
    (out / "labels.csv").write_text("file;kind\nx.wav;drone\n")  # someone else's, not ours
    foreign = run_cli("export-labelled", str(out), "--config", str(config))
    assert foreign.returncode == 2 and "not a labels file" in foreign.stderr
    assert (out / "labels.csv").read_text() == "file;kind\nx.wav;drone\n"
    assert list(out.iterdir()) == [out / "labels.csv"]  # refused before a clip was copied


def test_one_night_at_a_site_is_one_group_in_its_own_time_zone(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import time

    from nightear.labels import night_of
    from nightear.sinks.store import StoredEvent

    def night(start: str) -> str:
        return night_of(StoredEvent("id", "post-7", "closed", start, start, 0.99, 0.97, 3, "m", "0" * 64))

    monkeypatch.setenv("TZ", "America/Phoenix")  # UTC-7: a night runs 03:00-13:00 UTC
    time.tzset()
    try:
        evening, dawn = night("2026-12-05T03:10:00.000+00:00"), night("2026-12-05T12:50:00.000+00:00")
        next_evening = night("2026-12-06T03:10:00.000+00:00")
    finally:
        monkeypatch.undo()
        time.tzset()
    assert evening == dawn == "2026-12-04" and next_evening == "2026-12-05"
