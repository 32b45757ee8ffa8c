"""`nightear listen` through the real capture stack: PortAudio reading an ALSA `file` device
(a test-local .asoundrc) fed with a fixture, no sound card and no mock."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.conftest import CLEARS_BEBOP, FIXTURES, REPO, listen, run_cli, write_asoundrc

EXAMPLE = REPO / "examples" / "drone-pass.flac"


def test_live_stream_scores_like_detect_on_the_same_audio(fake_mic, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    env = fake_mic(EXAMPLE)
    config = tmp_path / "unpaced.yaml"  # the file device delivers far faster than real time:
    config.write_text("audio:\n  buffer_seconds: 60\n")  # a ring that holds the whole test
    live = listen(env, "--config", str(config), "--scores", "--duration", "12")
    assert live.returncode == 0, live.stderr
    offline = run_cli("detect", "--scores", str(EXAMPLE))
    live_scores = [json.loads(line) for line in live.stdout.splitlines()]
    file_scores = [json.loads(line) for line in offline.stdout.splitlines()][: len(live_scores)]
    assert len(live_scores) == int((12 * 16000 - 15872) / 8000) + 1  # a window every 0.5 s
    assert [(s["t_s"], s["p"]) for s in live_scores] == [(s["t_s"], s["p"]) for s in file_scores]
    assert np.ptp([s["p"] for s in live_scores]) > 0.5  # the drone came and the scores moved


def test_live_events_open_then_close_with_utc_times(fake_mic, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    env = fake_mic(FIXTURES / "drone_bebop_16k.flac")
    config = tmp_path / "clears.yaml"  # a threshold the fixture clears from its first window
    config.write_text("decision:\n  threshold: 0.9\n")  # (as tests/test_cli.py's pipeline tests)
    result = listen(env, "--config", str(config), "--duration", "4.5")
    assert result.returncode == 0, result.stderr
    opened, closed = (json.loads(line) for line in result.stdout.splitlines())
    assert (opened["event"], closed["event"]) == ("open", "close")
    assert opened["id"] == closed["id"] and closed["state"] == "closed"
    assert opened["start"].endswith("+00:00") and closed["end_s"] > opened["end_s"]
    assert len(closed["model_sha256"]) == 64


def test_sigterm_closes_the_open_event_and_exits_cleanly(fake_mic) -> None:  # type: ignore[no-untyped-def]
    env = fake_mic(FIXTURES / "drone_bebop_16k.flac")  # the file device repeats: a drone forever
    proc = subprocess.Popen([sys.executable, "-m", "nightear", "listen"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    assert proc.stdout is not None and proc.stderr is not None
    first = json.loads(proc.stdout.readline())
    assert first["event"] == "open"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    # read the pipes themselves: communicate() would skip what readline() already buffered
    rest, errors = proc.stdout.read(), proc.stderr.read()
    assert json.loads(rest.splitlines()[-1])["event"] == "close"
    assert "Traceback" not in errors


def test_missing_device_is_one_clear_line(fake_mic, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    env = fake_mic(FIXTURES / "drone_bebop_16k.flac")
    config = tmp_path / "mic.yaml"
    config.write_text("audio:\n  device: no-such-microphone\n")
    result = listen(env, "--config", str(config), "--duration", "1")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("nightear: error:")]
    assert "audio device 'no-such-microphone'" in line and "nightear devices" in line


def test_devices_lists_the_capture_device(fake_mic) -> None:  # type: ignore[no-untyped-def]
    env = fake_mic(FIXTURES / "drone_bebop_16k.flac")
    result = subprocess.run([sys.executable, "-m", "nightear", "devices"], capture_output=True,
                            text=True, env=env, timeout=60)
    assert result.returncode == 0
    names = [json.loads(line)["name"] for line in result.stdout.splitlines()]
    assert "default" in names


def test_events_are_stored_before_they_are_printed_and_listed(fake_mic, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    env = fake_mic(FIXTURES / "drone_bebop_16k.flac")
    db = tmp_path / "data" / "events.db"
    config = tmp_path / "store.yaml"
    config.write_text(f"node: post-7\nstore:\n  path: {db}\n{CLEARS_BEBOP}")
    result = listen(env, "--config", str(config), "--duration", "4.5")
    assert result.returncode == 0, result.stderr
    printed = [json.loads(line) for line in result.stdout.splitlines()]
    assert [p["state"] for p in printed] == ["open", "closed"] and printed[0]["node"] == "post-7"
    listed = run_cli("events", "--db", str(db), "--json", "--since", "1h")
    (stored,) = [json.loads(line) for line in listed.stdout.splitlines()]
    assert stored["id"] == printed[0]["id"] == printed[1]["id"]
    assert stored["state"] == "closed" and stored["end"] == printed[1]["end"]
    assert run_cli("events", "--db", str(db), "--since", "2999-01-01").stdout == ""
    missing = run_cli("events", "--db", str(tmp_path / "none.db"))
    assert missing.returncode == 2 and "no such event store" in missing.stderr


def test_metrics_file_and_systemd_notify(fake_mic, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import socket

    env = fake_mic(FIXTURES / "drone_bebop_16k.flac")
    prom = tmp_path / "textfile" / "nightear.prom"
    config = tmp_path / "metrics.yaml"
    config.write_text(f"node: post-7\nmetrics:\n  path: {prom}\n  interval_seconds: 1\n{CLEARS_BEBOP}")
    notify = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(notify))
        sock.settimeout(5)
        result = listen({**env, "NOTIFY_SOCKET": str(notify)}, "--config", str(config),
                        "--duration", "4.5")
        assert result.returncode == 0, result.stderr
        assert sock.recv(1024).decode().splitlines() == ["READY=1", "WATCHDOG=1"]
    values = {line.split("{")[0]: float(line.split()[-1])
              for line in prom.read_text().splitlines() if not line.startswith("#")}
    assert values["nightear_audio_seconds_total"] == pytest.approx(4.5)
    # 4.5 s of audio: a 0.992-s window every 0.5 s
    assert values["nightear_windows_scored_total"] == 8 and values["nightear_events_total"] == 1
    assert values["nightear_real_time_factor"] > 1 and values["nightear_peak_rss_bytes"] > 0
    assert 'node="post-7"' in prom.read_text()
    assert not [p for p in prom.parent.iterdir() if p.name.startswith(".")]  # no temp file left


def test_check_validates_config_model_and_device(fake_mic, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    env = fake_mic(FIXTURES / "drone_bebop_16k.flac")
    ok = subprocess.run([sys.executable, "-m", "nightear", "check"], capture_output=True, text=True,
                        env=env, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert [line.split(":")[0] for line in ok.stdout.splitlines()] == \
        ["config", "model", "decision", "audio device"]
    config = tmp_path / "wide.yaml"
    config.write_text("audio:\n  channels: 200\n")
    bad = subprocess.run([sys.executable, "-m", "nightear", "check", "--config", str(config)],
                         capture_output=True, text=True, env=env, timeout=60)
    assert bad.returncode == 2 and "Expected `int` <= 16 - at `$.audio.channels`" in bad.stderr
    array = tmp_path / "array.yaml"
    array.write_text("array:\n  preset: respeaker-4mic\n  heading_deg: 45\n")
    four = subprocess.run([sys.executable, "-m", "nightear", "check", "--config", str(array)],
                          capture_output=True, text=True, env=env, timeout=60)
    assert four.returncode == 0, four.stderr
    assert "array: ok (respeaker-4mic: Seeed ReSpeaker 4-Mic Array for Raspberry Pi: square, 81.27 mm " \
           "diagonal; 4 mics on channels [0, 1, 2, 3] of 4, aperture 81 mm, heading 45 deg, beam on)" \
           in four.stdout
    assert "audio device: ok ('default', 4 ch, 16000 Hz)" in four.stdout


def test_event_clip_with_preroll_and_a_full_disk_that_costs_only_the_clip(fake_mic, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import resource

    env = fake_mic(EXAMPLE)  # the drone passes from 6 to 11 s
    clips, db = tmp_path / "clips", tmp_path / "events.db"
    config = tmp_path / "clips.yaml"
    config.write_text(f"store:\n  path: {db}\nclips:\n  folder: {clips}\n  preroll_seconds: 2\n"
                      "audio:\n  buffer_seconds: 60\n")
    result = listen(env, "--config", str(config), "--duration", "16")
    assert result.returncode == 0, result.stderr
    closed = json.loads(result.stdout.splitlines()[-1])
    duration = sf.info(closed["clip"]).duration
    assert duration == pytest.approx(closed["end_s"] - closed["start_s"] + 2.0, abs=0.01)
    assert Path(closed["clip"]).with_suffix(".png").is_file()

    def small_disk() -> None:  # files may not grow past 100 kB: writing a clip fails
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))

    blocked = tmp_path / "a-file"  # metrics "folder" that is a file: every write fails
    blocked.write_text("")
    config.write_text(config.read_text() + f"metrics:\n  path: {blocked / 'nightear.prom'}\n")
    full = subprocess.run([sys.executable, "-m", "nightear", "listen", "--config", str(config),
                           "--duration", "16"], capture_output=True, text=True, env=env, cwd=REPO,
                          timeout=120, preexec_fn=small_disk)
    assert full.returncode == 0, full.stderr
    states = [json.loads(line)["state"] for line in full.stdout.splitlines()]
    assert states == ["open", "closed"] and json.loads(full.stdout.splitlines()[-1])["clip"] is None
    assert "clip" in full.stderr and "not written" in full.stderr
    assert "metrics not written" in full.stderr


def test_a_device_gone_longer_than_the_watchdog_period_comes_back_by_itself(tmp_path: Path) -> None:
    """A FIFO behind the ALSA file device: audio, then the device is gone (the line closes and
    the FIFO is removed, so reopening fails as for an unplugged USB microphone) for longer than
    a 3-s watchdog period, then back. The daemon stays alive and says so (watchdog pings, STATUS=,
    metrics) while it retries, finds the device again and hears the next drone."""
    import socket
    import threading
    import time

    fifo = tmp_path / "mic.fifo"
    os.mkfifo(fifo)
    write_asoundrc(tmp_path, fifo)
    prom = tmp_path / "nightear.prom"
    config = tmp_path / "stall.yaml"
    config.write_text(f"audio:\n  stall_seconds: 2\nmetrics:\n  path: {prom}\n  interval_seconds: 30\n"
                      "decision:\n  threshold: 0.5\n")  # a service test: any drone-like second opens;
    # metrics every 30 s: the device's state shows when it changes, not at the next interval
    pipe_bytes = 60_000  # under the pipe's 64 kB: a write never blocks; 1.9 s of 16-bit audio
    drone = sf.read(FIXTURES / "drone_bebop_16k.flac", dtype="int16")[0].astype("<i2").tobytes()
    line = os.open(fifo, os.O_RDWR)
    os.write(line, drone[:pipe_bytes])
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify.sock"))
    messages: list[tuple[float, str]] = []
    threading.Thread(target=lambda: [messages.append((time.monotonic(), m.decode())) for m in iter(
        lambda: notify.recv(512), b"")], daemon=True).start()
    proc = subprocess.Popen([sys.executable, "-m", "nightear", "listen", "--config", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "HOME": str(tmp_path), "PYTHONFAULTHANDLER": "1",
                                 "NOTIFY_SOCKET": str(tmp_path / "notify.sock")}, cwd=REPO)
    assert proc.stdout is not None and proc.stderr is not None
    events: list[dict[str, str]] = []
    threading.Thread(target=lambda: events.extend(json.loads(x) for x in proc.stdout),  # type: ignore[union-attr]
                     daemon=True).start()

    def wait_until(done, seconds: float = 30.0) -> None:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + seconds
        while not done():
            assert time.monotonic() < deadline and proc.poll() is None, (states(), events[-1:])
            time.sleep(0.05)

    def states() -> list[str]:
        return [m for _, m in messages if m.startswith("STATUS=")]

    try:
        wait_until(lambda: any(e["event"] == "open" for e in events))
        gone = time.monotonic()  # the file device delivers faster than real time: all audio is in
        time.sleep(3.0)  # the line is silent: the stall is noticed (2 s after the last audio)
        os.close(line)  # the device goes: end of file, then no FIFO to open at all
        line = -1
        fifo.unlink()
        wait_until(lambda: any("attempt 2" in m for m in states()))
        assert "nightear_device_up{" in prom.read_text() and any(
            x.startswith("nightear_device_up{") and x.endswith(" 0") for x in prom.read_text().splitlines())
        os.mkfifo(fifo)  # plugged in again
        line = os.open(fifo, os.O_RDWR)
        os.write(line, drone[:pipe_bytes])
        wait_until(lambda: sum(e["event"] == "open" for e in events) == 2)
        back = time.monotonic()
        wait_until(lambda: any(x.startswith("nightear_device_up{") and x.endswith(" 1")
                               for x in prom.read_text().splitlines()), 5.0)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        # then end of file, which lets a read blocked on the FIFO return; never the other way
        # round: a FIFO left without a writer blocks whoever opens it, and a daemon that saw the
        # end of file before its SIGTERM would reopen the device and wait there for good
        if line >= 0:
            os.close(line)
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired as hung:
            proc.send_signal(signal.SIGABRT)  # PYTHONFAULTHANDLER: each thread's stack to stderr
            proc.wait(timeout=10)
            raise AssertionError("listen did not stop on SIGTERM:\n" + proc.stderr.read()[-6000:]) from hung
        finally:
            if proc.poll() is None:
                proc.kill()
    assert code == 0
    assert back - gone > 4.0  # longer than the watchdog period (3 s in this test)
    pings = [t for t, m in messages if "WATCHDOG=1" in m]
    assert max(b - a for a, b in zip(pings, pings[1:], strict=False) if a < back) < 3.0
    assert states()[0] == "STATUS=listening on 'default' (1 ch, 16000 Hz)"
    assert "STATUS=audio device lost (audio device 'default' delivered no audio for 2 s); reopening " \
           "in 1 s, attempt 1" in states()
    assert states()[-1] == "STATUS=listening on 'default' (1 ch, 16000 Hz)"
    opens = [e["id"] for e in events if e["event"] == "open"]
    assert len(opens) == 2 and opens[0] != opens[1]
    errors = proc.stderr.read()
    assert "delivered no audio for 2 s; reopening in 1 s" in errors and "Traceback" not in errors
    notify.close()


def test_an_array_unit_alerts_with_a_bearing_and_stores_the_track(fake_mic, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from nightear.geometry import PRESETS
    from nightear_training.array_eval import array_recording

    drone = sf.read(FIXTURES / "drone_bebop_16k.flac", dtype="float32")[0]
    night = sf.read(FIXTURES / "night_background_16k.flac", dtype="float32")[0]
    recording = array_recording(drone, night, PRESETS["respeaker-4mic"], 131.0, 20.0, 10.0,
                                np.random.default_rng(0), noise_dbfs=-40.0)
    four = tmp_path / "four.wav"
    sf.write(four, recording, 16000, subtype="PCM_16")
    env = fake_mic(four, channels=4)
    db = tmp_path / "events.db"
    config = tmp_path / "array.yaml"
    config.write_text(f"array:\n  preset: respeaker-4mic\n  heading_deg: 90\nstore:\n  path: {db}\n"
                      "decision:\n  threshold: 0.9\n")  # one event over the whole 4.5 s
    result = listen(env, "--config", str(config), "--duration", "4.5")
    assert result.returncode == 0, result.stderr
    assert "4 ch, 16000 Hz, array respeaker-4mic" in result.stderr
    opened, closed = (json.loads(line) for line in result.stdout.splitlines())
    for event in (opened, closed):  # the live alert already says where to look
        assert abs((event["bearing_deg"] - 221.0 + 180) % 360 - 180) <= 5.0  # 131 + heading 90
    assert closed["bearing_spread_deg"] <= 5.0
    listed_json = run_cli("events", "--db", str(db), "--json").stdout
    (stored,) = [json.loads(line) for line in listed_json.splitlines()]
    assert stored["bearing_deg"] == closed["bearing_deg"]
    assert len(stored["track"]) >= closed["windows"] and all(
        abs((p["bearing_deg"] - 221.0 + 180) % 360 - 180) <= 10.0 for p in stored["track"])
    listed = run_cli("events", "--db", str(db)).stdout
    assert f"bearing {closed['bearing_deg']:5.1f}" in listed
    scores = listen(env, "--config", str(config), "--duration", "4.5", "--scores")
    located = [json.loads(line) for line in scores.stdout.splitlines() if "bearing_deg" in line]
    assert located and all(abs((s["bearing_deg"] - 221.0 + 180) % 360 - 180) <= 10.0 for s in located)


@pytest.mark.parametrize("duration", ["nan", "inf", "0"])
def test_a_duration_that_is_not_a_finite_time_is_refused(fake_mic, duration: str) -> None:  # type: ignore[no-untyped-def]
    env = fake_mic(FIXTURES / "drone_bebop_16k.flac")
    result = listen(env, "--duration", duration)
    assert result.returncode == 2 and "Traceback" not in result.stderr and result.stdout == ""
    assert f"--duration: must be a finite number of seconds > 0, got {duration}" in result.stderr


def test_listen_refuses_a_model_with_another_output_shape(fake_mic, tmp_path: Path, model_path: Path) -> None:  # type: ignore[no-untyped-def]
    from tests.test_classifier import flattening_copy

    env = fake_mic(FIXTURES / "drone_bebop_16k.flac")
    wide = flattening_copy(model_path, tmp_path / "wide.onnx", declared=False)
    result = listen(env, "--model", str(wide), "--duration", "2")
    assert result.returncode == 2 and "Traceback" not in result.stderr and result.stdout == ""
    assert result.stderr.splitlines() == [
        f"nightear: error: {wide}: output shape [4, 6208] for 4 windows of input shape "
        "[4, 1, 64, 97]: not one drone probability per window"]
