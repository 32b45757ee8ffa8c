"""Recordings as a technician finds them: cut short, left by a streaming writer, at odd rates,
too short, not files at all, unreadable or with names too long. Each is scored as far as it can
be or named on one line with the reason in words, and the other files are still processed."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

from tests.conftest import PIPELINE_THRESHOLD, REPO, run_cli
from tests.test_cli import DRONE, assert_user_error, events

EXAMPLE = REPO / "examples" / "drone-pass.flac"  # a drone passes 6.0-11.1 s into 18 s


def example_wav(path: Path) -> bytes:
    """The example as a 16-bit WAV (44-byte header), its bytes."""
    samples, rate = sf.read(EXAMPLE, dtype="int16")
    sf.write(path, samples, rate, subtype="PCM_16")
    data = path.read_bytes()
    assert data[36:40] == b"data" and rate == 16000
    return data


def test_a_wav_cut_short_reports_its_drone_then_says_it_is_cut(tmp_path: Path) -> None:
    cut = tmp_path / "cut.wav"
    cut.write_bytes(example_wav(tmp_path / "full.wav")[: 44 + 10 * 16000 * 2])  # header still says 18 s
    result = run_cli("detect", str(cut), DRONE, "--threshold", PIPELINE_THRESHOLD)
    assert_user_error(result, f"{cut}: truncated: header promises 576000 bytes of audio, file holds "
                              "320000; scored up to 10.000 s")
    first, second = events(result.stdout)
    assert first["file"] == str(cut) and second["file"] == DRONE
    assert 6.0 <= float(first["start_s"]) < 9.0 and float(first["end_s"]) <= 10.0  # in the pass, to the cut


def test_a_wav_whose_length_is_a_streaming_placeholder_is_read_whole(tmp_path: Path) -> None:
    data = bytearray(example_wav(tmp_path / "full.wav"))
    data[4:8] = data[40:44] = struct.pack("<I", 0xFFFFFFFF)  # as arecord leaves a pipe's output
    streamed = tmp_path / "streamed.wav"
    streamed.write_bytes(bytes(data))
    result = run_cli("detect", str(streamed))
    assert result.returncode == 0, result.stderr
    (event,) = events(result.stdout)
    (whole,) = events(run_cli("detect", str(tmp_path / "full.wav")).stdout)  # the same file, its length given
    assert (event["start_s"], event["end_s"]) == (whole["start_s"], whole["end_s"])
    assert f"nightear: note: {streamed}: its header gives no length (0xffffffff" in result.stderr


def test_sample_rates_no_recording_has_or_too_low_to_score_are_named(tmp_path: Path) -> None:
    data = example_wav(tmp_path / "full.wav")
    paths = []
    for rate in (0, 4294967295, 1, 4000):
        path = tmp_path / f"rate{rate}.wav"
        path.write_bytes(data[:24] + struct.pack("<I", rate) + data[28:])
        paths.append(str(path))
    result = run_cli("detect", "--threshold", PIPELINE_THRESHOLD, *paths, DRONE)
    assert_user_error(result, f"{paths[0]}: not a readable audio file (its header gives a sample rate "
                              "of 0 Hz)",
                      f"{paths[1]}: not a readable audio file (its header gives a sample rate of "
                      "4294967295 Hz)",
                      f"{paths[2]}: its sample rate, 1 Hz, is too low to score",
                      f"{paths[3]}: its sample rate, 4000 Hz, is too low to score")
    assert "SF_INFO" not in result.stderr
    assert [e["file"] for e in events(result.stdout)] == [DRONE]


def test_a_file_shorter_than_one_window_is_named_as_too_short(tmp_path: Path) -> None:
    short = tmp_path / "short.wav"
    sf.write(short, np.zeros(8000, dtype=np.float32), 16000)
    result = run_cli("detect", "--threshold", PIPELINE_THRESHOLD, str(short), DRONE)
    assert_user_error(result, f"{short}: too short to score: 0.500 s of audio, one window of the "
                              "model is 0.992 s")
    assert [e["file"] for e in events(result.stdout)] == [DRONE]


def test_a_fifo_is_refused_at_once_instead_of_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.wav"
    os.mkfifo(fifo)
    # run_cli's timeout fails the test if it hangs
    result = run_cli("detect", "--threshold", PIPELINE_THRESHOLD, str(fifo), DRONE)
    assert_user_error(result, f"{fifo}: is not a regular file (a FIFO, device or socket)")
    assert [e["file"] for e in events(result.stdout)] == [DRONE]


def test_a_file_without_read_permission_says_permission_denied(tmp_path: Path) -> None:
    locked = tmp_path / "locked.wav"
    sf.write(locked, np.zeros(32000, dtype=np.float32), 16000)
    locked.chmod(0o200)
    tmp_path.chmod(0o755)
    # root reads anything: run as nobody (setpriv is in util-linux)
    drop = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if os.geteuid() == 0 else []
    result = subprocess.run([*drop, sys.executable, "-m", "nightear", "detect", "--threshold",
                             PIPELINE_THRESHOLD, str(locked), DRONE],
                            capture_output=True, text=True, cwd=REPO, timeout=300)
    assert_user_error(result, f"{locked}: permission denied")
    assert "System error" not in result.stderr
    assert [e["file"] for e in events(result.stdout)] == [DRONE]


def test_names_too_long_for_the_file_system_are_one_line_each(tmp_path: Path) -> None:
    long_name = str(tmp_path / ("n" * 300 + ".wav"))
    long_path = str(tmp_path / "/".join(["d" * 200] * 25)) + ".wav"
    result = run_cli("detect", "--threshold", PIPELINE_THRESHOLD, long_name, long_path, DRONE)
    assert_user_error(result, f"{long_name}: file name too long", f"{long_path}: file name too long")
    assert [e["file"] for e in events(result.stdout)] == [DRONE]


def test_libsndfiles_bytes_name_never_leaks_into_a_message(tmp_path: Path) -> None:
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" + bytes(200))
    result = run_cli("detect", str(junk))
    assert_user_error(result, f"{junk}: not a readable audio file")
    assert "b'" not in result.stderr and "Error opening" not in result.stderr


def test_every_command_names_a_path_too_long_for_the_file_system(tmp_path: Path) -> None:
    long_name = str(tmp_path / ("n" * 300))
    deep = str(tmp_path / "/".join(["d" * 200] * 25))
    for path in (long_name, deep):
        for args in (["events", "--db", f"{path}.db"], ["label", "12345678", "drone", "--db", f"{path}.db"],
                     ["info", "--model", f"{path}.onnx"], ["detect", "--config", f"{path}.yaml", DRONE],
                     ["fetch-data", path]):
            result = run_cli(*args)
            assert result.returncode == 2 and "Traceback" not in result.stderr, (args, result.stderr)
            assert "file name too long" in result.stderr.lower(), (args, result.stderr)
        config = tmp_path / "unit.yaml"
        for section in (f"store:\n  path: {path}.db", f"clips:\n  folder: {path}",
                        f"metrics:\n  path: {path}.prom"):
            config.write_text(section + "\n")
            result = run_cli("check", "--config", str(config))
            assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
            assert any(line.startswith("nightear: error: ") and "file name too long" in line
                       for line in result.stderr.splitlines()), result.stderr


def test_a_fifo_or_device_as_model_config_or_store_is_refused_at_once(tmp_path: Path) -> None:
    """A FIFO blocks a reader until someone writes; /dev/zero never ends: neither is read."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    config = tmp_path / "unit.yaml"
    config.write_text(f"store:\n  path: {fifo}\n")
    for special in (str(fifo), "/dev/zero"):
        for args in (["info", "--model", special], ["detect", "--config", special, DRONE],
                     ["events", "--db", special], ["label", "12345678", "drone", "--db", special]):
            result = run_cli(*args)  # run_cli's timeout fails the test if one hangs
            assert_user_error(result, f"{special}: is not a regular file (a FIFO, device or socket)")
    for args in (["check", "--config", str(config)], ["listen", "--config", str(config)]):
        result = run_cli(*args)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert f"{fifo}: is not a regular file" in result.stderr, (args, result.stderr)
