"""The daemon under faults, through the real PortAudio and ALSA stack (a file device fed from a
recording or a FIFO): kills, hang-ups, a second daemon on one store, a device that goes away
and comes back, and event times when the device pauses or the ring drops audio."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import soundfile as sf

from tests.conftest import CLEARS_BEBOP, FIXTURES, REPO, run_cli, write_asoundrc

DRONE = FIXTURES / "drone_bebop_16k.flac"


@pytest.fixture(autouse=True)
def no_daemon_left_behind():  # type: ignore[no-untyped-def]
    """A daemon a failed test leaves running is killed with the test."""
    yield
    for daemon in Daemon.started:
        if daemon.proc.poll() is None:
            daemon.proc.kill()
            daemon.proc.wait(timeout=30)
    Daemon.started.clear()


class Daemon:
    """`nightear listen` in the background, its stdout lines collected as they come."""

    started: list[Daemon] = []

    def __init__(self, env: dict[str, str], *args: str):
        Daemon.started.append(self)
        self.proc = subprocess.Popen([sys.executable, "-m", "nightear", "listen", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=env, cwd=REPO)
        self.lines: list[dict[str, object]] = []
        self.errors: list[str] = []
        assert self.proc.stdout is not None and self.proc.stderr is not None
        out, err = self.proc.stdout, self.proc.stderr
        threading.Thread(target=lambda: self.lines.extend(json.loads(x) for x in out), daemon=True).start()
        threading.Thread(target=lambda: self.errors.extend(err), daemon=True).start()

    def wait_for(self, what: str, count: int = 1, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while sum(line["event"] == what for line in self.lines) < count:
            assert time.monotonic() < deadline and self.proc.poll() is None, (self.lines, self.errors)
            time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=30)
        time.sleep(0.2)  # the reader threads take the last lines
        return code


def store_config(tmp_path: Path, name: str = "store.yaml", extra: str = "") -> tuple[Path, Path]:
    db = tmp_path / "data" / "events.db"
    config = tmp_path / name
    config.write_text(f"node: post-7\nstore:\n  path: {db}\n{extra}")
    return config, db


def test_a_second_daemon_on_the_same_store_is_refused(fake_mic, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    env = fake_mic(DRONE)  # the file device repeats: a drone forever
    config, db = store_config(tmp_path, extra=CLEARS_BEBOP)
    first = Daemon(env, "--config", str(config))
    first.wait_for("open")
    second = subprocess.run([sys.executable, "-m", "nightear", "listen", "--config", str(config)],
                            capture_output=True, text=True, env=env, cwd=REPO, timeout=60)
    assert second.returncode == 2 and second.stdout == "" and "Traceback" not in second.stderr
    assert second.stderr.splitlines() == [
        f"nightear: error: {db}: another nightear listen (pid {first.proc.pid}) is using this event "
        "store; stop it first or give this one its own store.path"]
    assert first.stop() == 0
    stored = [json.loads(x) for x in run_cli("events", "--db", str(db), "--json").stdout.splitlines()]
    assert len(stored) == 1 and stored[0]["state"] == "closed"  # the drone stored once
    again = Daemon(env, "--config", str(config), "--duration", "1")  # the lock went with the process
    assert again.proc.wait(timeout=60) == 0


def test_an_event_left_open_by_a_killed_run_is_closed_at_start_up(fake_mic, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    env = fake_mic(DRONE)
    # the repeating drone scores about 0.997 after its first pass: under the model's threshold
    config, db = store_config(tmp_path, extra="decision:\n  threshold: 0.9\n")  # one long pass
    killed = Daemon(env, "--config", str(config))
    killed.wait_for("open")
    opened = killed.lines[0]
    time.sleep(2.5)  # the open event's row is brought up to date every second
    killed.stop(signal.SIGKILL)
    (left,) = [json.loads(x) for x in run_cli("events", "--db", str(db), "--json").stdout.splitlines()]
    assert left["state"] == "open" and left["end"] > opened["end"]  # its last stored window
    quiet = fake_mic(FIXTURES / "silence_16k.wav")
    restart = subprocess.run([sys.executable, "-m", "nightear", "listen", "--config", str(config),
                              "--duration", "1"], capture_output=True, text=True, env=quiet, cwd=REPO,
                             timeout=60)
    assert restart.returncode == 0, restart.stderr
    assert f"nightear: event {opened['id']} from {opened['start']} was left open by a run that ended " \
           f"without closing it: closed at {left['end']}, marked interrupted" in restart.stderr
    (closed,) = [json.loads(x) for x in run_cli("events", "--db", str(db), "--json").stdout.splitlines()]
    assert closed["state"] == "closed" and closed["interrupted"] is True
    assert (closed["start"], closed["end"]) == (opened["start"], left["end"])
    assert "interrupted" in run_cli("events", "--db", str(db)).stdout.split()


def test_sighup_closes_the_event_reloads_and_listens_on(fake_mic, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    env = fake_mic(DRONE)
    config, db = store_config(tmp_path, extra=CLEARS_BEBOP)
    daemon = Daemon(env, "--config", str(config))
    daemon.wait_for("open")
    config.write_text(config.read_text().replace("post-7", "post-8"))
    daemon.proc.send_signal(signal.SIGHUP)
    daemon.wait_for("close")
    daemon.wait_for("open", count=2)  # the drone is still there: heard again after the reload
    assert daemon.proc.poll() is None
    assert daemon.stop() == 0
    kinds = [(line["event"], line["node"]) for line in daemon.lines]
    assert kinds == [("open", "post-7"), ("close", "post-7"), ("open", "post-8"), ("close", "post-8")]
    assert any("SIGHUP: reloaded config and model" in line for line in daemon.errors)
    stored = [json.loads(x) for x in run_cli("events", "--db", str(db), "--json").stdout.splitlines()]
    assert [e["state"] for e in stored] == ["closed", "closed"]


def test_event_times_are_capture_times_across_a_pause_and_dropped_audio(tmp_path: Path) -> None:
    """A FIFO paced like a microphone: night, a 3-s pause (the device delivers nothing), drone
    A, night, drone B. While drone A is heard the test holds the store's write lock for 4 s, so
    the daemon's loop waits and its 1-s ring drops audio. Each event must start when its drone
    went into the line, not at "start + samples counted" (3 and 5 s early)."""
    import sqlite3
    from datetime import UTC, datetime

    import numpy as np

    fifo = tmp_path / "mic.fifo"
    os.mkfifo(fifo)
    write_asoundrc(tmp_path, fifo)
    db = tmp_path / "events.db"
    config = tmp_path / "paced.yaml"
    config.write_text(f"audio:\n  buffer_seconds: 1\n  stall_seconds: 30\nstore:\n  path: {db}\n"
                      # no mean: the event opens (and the store blocks the loop) early in drone A
                      "decision:\n  threshold: 0.9\n  smooth_windows: 1\n  open_windows: 2\n")
    drone = sf.read(DRONE, dtype="int16")[0][: 4 * 16000]
    night = sf.read(FIXTURES / "night_background_16k.flac", dtype="int16")[0]
    plan = [("night", night[:16000]), ("pause", 3.0), ("A", drone), ("night", night[: 2 * 16000]),
            ("B", drone), ("night", night[: 2 * 16000])]
    line = os.open(fifo, os.O_RDWR)
    daemon = Daemon({**os.environ, "HOME": str(tmp_path)}, "--config", str(config))
    went_in: dict[str, datetime] = {}

    def hold_the_store(seconds: float) -> None:
        with sqlite3.connect(db, timeout=30) as other:
            other.execute("BEGIN IMMEDIATE")
            time.sleep(seconds)
            other.rollback()

    try:
        deadline = time.monotonic() + 60  # the device opened: nothing waits in the FIFO's buffer
        while not any("listening on" in x for x in daemon.errors):
            assert time.monotonic() < deadline and daemon.proc.poll() is None, daemon.errors
            time.sleep(0.05)
        next_chunk = time.monotonic()
        for name, part in plan:
            if isinstance(part, float):
                time.sleep(part)
                next_chunk = time.monotonic()
                continue
            if name in ("A", "B"):
                went_in[name] = datetime.now(UTC)
            if name == "A":
                # from 0.3 s to 4.3 s into A: the event opens 1-2 s in, and the loop waits
                # for the store longer than the ring holds, however early it opened
                threading.Timer(0.3, hold_the_store, (4.0,)).start()
            for chunk in np.array_split(part, len(part) // 1600):  # 0.1 s at a time, on time
                next_chunk += len(chunk) / 16000
                time.sleep(max(0.0, next_chunk - time.monotonic()))
                os.write(line, chunk.astype("<i2").tobytes())
        daemon.wait_for("close", count=2)
    finally:
        os.close(line)  # end of file: a read blocked on the FIFO returns
    assert daemon.stop() == 0
    closed = [e for e in daemon.lines if e["event"] == "close"]
    for name, event in zip("AB", closed, strict=True):
        start = datetime.fromisoformat(str(event["start"]))
        assert abs((start - went_in[name]).total_seconds()) < 1.0, (name, event["start"], went_in[name])
    # the stream lost over a second between the drones: counting samples would put B early
    stream_gap = float(closed[1]["start_s"]) - float(closed[0]["start_s"])
    assert stream_gap < (went_in["B"] - went_in["A"]).total_seconds() - 1.0
    assert any("frames dropped" in x for x in daemon.errors)
