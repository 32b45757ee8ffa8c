"""`nightear detect` as a user runs it: events for drones, silence for the rest, and one clear
line per bad file while the good files are still processed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from tests.conftest import CLEARS_BEBOP, FIXTURES, PIPELINE_THRESHOLD, run_cli

DRONE = str(FIXTURES / "drone_bebop_16k.flac")
NIGHT = str(FIXTURES / "night_background_16k.flac")
SILENCE = str(FIXTURES / "silence_16k.wav")
STEREO_44K = str(FIXTURES / "drone_membo_44k_stereo.flac")
CORRUPT = str(FIXTURES / "corrupt.wav")


def events(stdout: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in stdout.splitlines()]


def assert_user_error(result, *needles: str) -> None:  # type: ignore[no-untyped-def]
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert any(line.startswith("nightear: error: ") and needle in line
                   for line in result.stderr.splitlines()), (needle, result.stderr)


def test_drone_recording_gives_one_event_with_its_extent() -> None:
    result = run_cli("detect", "--threshold", PIPELINE_THRESHOLD, DRONE)
    assert result.returncode == 0, result.stderr
    (event,) = events(result.stdout)
    assert event["file"] == DRONE
    assert {"start_s", "end_s", "peak_confidence", "mean_confidence"} <= set(event)
    assert float(event["start_s"]) < 1.0 and float(event["end_s"]) > 4.0  # the whole 5-s pass
    assert 0.5 < float(event["mean_confidence"]) <= float(event["peak_confidence"]) <= 1.0


def test_night_background_and_silence_give_no_event() -> None:
    result = run_cli("detect", NIGHT, SILENCE)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""


def test_44k_stereo_drone_is_resampled_and_detected() -> None:
    result = run_cli("detect", STEREO_44K)
    assert result.returncode == 0, result.stderr
    assert len(events(result.stdout)) == 1


def test_rate_and_channels_do_not_change_the_verdict(tmp_path: Path) -> None:
    y, rate = sf.read(DRONE, dtype="float32")
    wide = soxr.resample(y, rate, 48000)
    path = tmp_path / "drone_48k_4ch.wav"
    sf.write(path, np.stack([wide] * 4, axis=1), 48000, subtype="FLOAT")
    original, converted = (events(run_cli("detect", "--threshold", PIPELINE_THRESHOLD, f).stdout)
                           for f in (DRONE, str(path)))
    assert len(original) == len(converted) == 1
    assert abs(float(original[0]["start_s"]) - float(converted[0]["start_s"])) < 0.3
    assert abs(float(original[0]["end_s"]) - float(converted[0]["end_s"])) < 0.3


def test_example_in_readme_finds_the_drone_pass() -> None:
    example = Path(__file__).resolve().parent.parent / "examples" / "drone-pass.flac"
    found = events(run_cli("detect", str(example)).stdout)
    assert len(found) == 1  # one pass, one event, nothing in the 12 s of ambience around it
    assert 6.0 - 0.82 < float(found[0]["start_s"]) and float(found[0]["end_s"]) < 11.1 + 0.82


def test_scores_prints_one_line_per_window() -> None:
    result = run_cli("detect", "--scores", DRONE, NIGHT)
    assert result.returncode == 0
    lines = events(result.stdout)
    drone = [x for x in lines if x["file"] == DRONE]
    night = [x for x in lines if x["file"] == NIGHT]
    assert set(drone[0]) == {"file", "t_s", "p"}
    # 5 s of audio, 0.992-s windows (15,872 samples) every 0.5 s (8,000 samples)
    assert len(drone) == int((sf.info(DRONE).frames - 15872) / 8000) + 1
    assert np.allclose(np.diff([float(x["t_s"]) for x in drone]), 0.5, atol=1e-3)
    threshold = json.loads(run_cli("info").stdout)["threshold"]
    over = [float(x["p"]) >= threshold for x in drone]
    assert any(a and b for a, b in zip(over, over[1:], strict=False))  # two in a row: an alarm
    assert max(float(x["p"]) for x in night) < threshold  # the night never does


def test_bad_files_are_reported_and_the_good_ones_still_processed(tmp_path: Path) -> None:
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, dtype=np.float32), 16000)
    truncated = tmp_path / "truncated.wav"
    sf.write(truncated, sf.read(DRONE, dtype="float32")[0], 16000, subtype="PCM_16")
    truncated.write_bytes(truncated.read_bytes()[:40000])
    missing = tmp_path / "missing.flac"
    result = run_cli("detect", "--threshold", PIPELINE_THRESHOLD, CORRUPT, str(empty), DRONE, str(truncated),
                     str(missing))
    assert_user_error(result, f"{CORRUPT}: not a readable audio file", f"{empty}: holds no audio",
                      f"{truncated}: truncated", f"{missing}: no such file")
    assert len(result.stderr.splitlines()) == 4
    # the cut file's drone, heard up to where it breaks off, is still reported
    assert [e["file"] for e in events(result.stdout)] == [DRONE, str(truncated)]


def test_bad_threshold_is_refused() -> None:
    result = run_cli("detect", "--threshold", "1.5", DRONE)
    assert result.returncode == 2 and "threshold must be in (0, 1), got 1.5" in result.stderr


def test_a_high_threshold_silences_the_detector() -> None:
    result = run_cli("detect", "--threshold", "0.9999999", NIGHT)
    assert result.returncode == 0 and result.stdout == ""


def test_bad_config_key_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("decision:\n  close_window: 3\n")
    result = run_cli("detect", "--config", str(config), DRONE)
    assert_user_error(result, f"{config}: Object contains unknown field `close_window`")
    assert len(result.stderr.splitlines()) == 1 and result.stdout == ""


def test_config_model_path_is_relative_to_the_config(tmp_path: Path, model_path: Path) -> None:
    (tmp_path / "m.onnx").write_bytes(model_path.read_bytes())
    config = tmp_path / "nightear.yaml"
    config.write_text(f"model:\n  path: m.onnx\n{CLEARS_BEBOP}")
    result = run_cli("detect", "--config", str(config), DRONE)
    assert result.returncode == 0 and len(events(result.stdout)) == 1


def test_mismatched_model_is_refused(tmp_path: Path, model_path: Path) -> None:
    from tests.test_classifier import edited_copy

    other = edited_copy(model_path, tmp_path / "other.onnx", n_mels="40")
    result = run_cli("detect", "--model", str(other), DRONE)
    assert_user_error(result, "n_mels=40 (front-end has 64)")


def test_info_prints_the_model_contract() -> None:
    result = run_cli("info")
    assert result.returncode == 0
    info = json.loads(result.stdout)
    built = json.loads((Path(__file__).resolve().parent.parent / "models"
                        / "nightear-drone.metrics.json").read_text())["model"]  # what the card says
    assert info["model_name"] == "nightear-drone" and info["model_version"] == built["version"]
    assert (info["n_mels"], info["sample_rate"], info["threshold"]) == (64, 16000, built["threshold"])
    assert info["labels"] == ["background", "drone"] and isinstance(info["fmin"], float)
    assert info["window_seconds"] == 0.992  # 97 frames: (97 - 1) * 160 + 512 samples at 16 kHz
    assert len(info["sha256"]) == 64 and "mel_basis" not in info


def test_bench_reports_every_stage_and_the_baseline() -> None:
    result = run_cli("bench", "--seconds", "10")
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert set(figures["cpu_ms_per_audio_second"]) == {"to_float", "array", "frontend", "classifier",
                                                       "decision", "bearing"}
    assert figures["pipeline_real_time_factor"] > 1 and figures["channels"] == 4
    assert figures["pipeline_without_array_real_time_factor"] > 1
    assert figures["array"] == "respeaker-4mic"
    # the simulated source is found where it was put
    assert abs((figures["heard_bearing_deg"] - figures["source_bearing_deg"] + 180) % 360 - 180) < 5
    assert figures["startup_to_first_score_s"] > 0 and figures["peak_rss_mb_pipeline"] > 0
    assert set(figures["baseline"]["cpu_ms_per_audio_second"]) == {"librosa_melspectrogram", "model"}
    too_short = run_cli("bench", "--seconds", "1")
    assert too_short.returncode == 2 and "needs at least 10 s of audio" in too_short.stderr


def test_a_file_name_that_is_not_utf8_is_read_like_any_other(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    odd = os.fsdecode(bytes(tmp_path / "caf") + b"\xe9.flac")  # Latin-1 bytes, as a USB stick may hold
    Path(odd).write_bytes(Path(DRONE).read_bytes())
    missing = os.fsdecode(bytes(tmp_path / "gone") + b"\xff.wav")
    result = subprocess.run([sys.executable, "-m", "nightear", "detect", "--threshold", PIPELINE_THRESHOLD,
                             odd, missing, DRONE],
                            capture_output=True, text=True, errors="surrogateescape", timeout=300)
    assert_user_error(result, "gone")
    assert len(result.stderr.splitlines()) == 1 and "no such file" in result.stderr
    found = events(result.stdout)
    assert [os.fsencode(str(e["file"])) for e in found] == [os.fsencode(odd), os.fsencode(DRONE)]


def test_a_model_with_another_output_shape_is_one_line_naming_file_and_shapes(
        tmp_path: Path, model_path: Path) -> None:
    from tests.test_classifier import flattening_copy

    wide = flattening_copy(model_path, tmp_path / "wide.onnx")
    result = run_cli("detect", "--model", str(wide), DRONE)
    assert_user_error(result, f"{wide}: output shape [['batch', 6208]] is not one drone probability")
    assert len(result.stderr.splitlines()) == 1 and result.stdout == ""


def test_an_event_open_when_the_file_breaks_off_is_reported_before_the_error(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parent.parent / "examples" / "drone-pass.flac"
    cut = tmp_path / "cut.flac"  # the FLAC breaks off at about 10 s, mid-pass (6-11 s)
    data = example.read_bytes()
    cut.write_bytes(data[: int(len(data) * 10.6 / 18)])
    result = run_cli("detect", "--threshold", PIPELINE_THRESHOLD, str(cut), DRONE)
    assert_user_error(result, f"{cut}: unreadable at 10.0 s")
    first, second = events(result.stdout)
    assert first["file"] == str(cut) and second["file"] == DRONE
    assert 6.0 <= float(first["start_s"]) and float(first["end_s"]) <= 10.0  # up to the last good sample
    assert float(first["peak_confidence"]) > 0.99


def test_non_finite_samples_are_an_error_after_the_event_they_cut_short(tmp_path: Path) -> None:
    y, rate = sf.read(DRONE, dtype="float32")
    y[int(3.5 * rate)] = np.nan
    nan_file, inf_file = tmp_path / "nan.wav", tmp_path / "inf.wav"
    sf.write(nan_file, y, rate, subtype="FLOAT")
    y[int(3.5 * rate)] = np.inf
    sf.write(inf_file, y, rate, subtype="FLOAT")
    result = run_cli("detect", "--threshold", PIPELINE_THRESHOLD, str(nan_file), str(inf_file))
    assert_user_error(result, f"{nan_file}: non-finite sample (NaN or inf) at 3.500 s",
                      f"{inf_file}: non-finite sample (NaN or inf) at 3.500 s")
    found = events(result.stdout)
    assert [e["file"] for e in found] == [str(nan_file), str(inf_file)]
    assert all(float(e["end_s"]) <= 3.5 and float(e["peak_confidence"]) > 0.9 for e in found)
    scores = run_cli("detect", "--scores", str(nan_file))
    assert max(float(x["t_s"]) + 0.992 for x in events(scores.stdout)) <= 3.5  # no score of NaN


def test_more_than_two_channels_without_an_array_says_once_they_were_averaged(tmp_path: Path) -> None:
    y, rate = sf.read(DRONE, dtype="float32")
    four, stereo = tmp_path / "four.wav", tmp_path / "two.wav"
    sf.write(four, np.stack([y] * 4, axis=1), rate, subtype="FLOAT")
    sf.write(stereo, np.stack([y] * 2, axis=1), rate, subtype="FLOAT")
    result = run_cli("detect", "--threshold", PIPELINE_THRESHOLD, str(four), str(stereo))
    assert result.returncode == 0 and len(events(result.stdout)) == 2
    assert result.stderr.splitlines() == [
        f"nightear: note: {four}: 4 channels averaged to mono; --array PRESET (or the config's "
        "array) would beamform them"]
    beamed = run_cli("detect", "--array", "respeaker-4mic", str(four))
    assert beamed.returncode == 0 and "averaged" not in beamed.stderr


def test_the_progress_bar_is_cleared_before_an_event_line(tmp_path: Path) -> None:
    import os
    import pty
    import subprocess
    import sys

    drone, rate = sf.read(DRONE, dtype="float32")
    night = sf.read(NIGHT, dtype="float32")[0]
    long = tmp_path / "long.wav"  # over a minute, so the bar shows; the drone comes first
    sf.write(long, np.concatenate([drone] + [night] * 11), rate, subtype="PCM_16")
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "nightear", "detect", "--threshold", PIPELINE_THRESHOLD,
                             str(long)],
                            stdout=follower, stderr=follower)
    os.close(follower)
    screen = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the terminal closed with the process
            break
        if not chunk:
            break
        screen += chunk
    os.close(leader)
    assert proc.wait(timeout=120) == 0
    text = screen.decode()
    assert "% of 1.2 min audio" in text  # the bar was drawn
    (event_line,) = [line for line in text.split("\r\n") if '"file"' in line]
    assert event_line.split("\r")[-1].startswith('{"file": ')  # what the terminal shows
    assert "audio{" not in text.replace("\r", "")


def test_no_option_value_error_shows_an_internal_name_or_a_traceback() -> None:
    """Every typed option refuses nonsense, NaN and infinity in words, never as
    argparse's 'invalid _threshold value' nor a traceback."""
    import argparse
    import contextlib
    import io

    from nightear.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    tried = 0
    for name, command in commands.items():
        for action in command._actions:
            if action.type is None or not action.option_strings or action.choices:
                continue
            for value in ("abc", "nan", "inf", "-inf"):
                stderr = io.StringIO()
                with contextlib.redirect_stderr(stderr), contextlib.suppress(SystemExit):
                    parser.parse_args([name, action.option_strings[0], value, *(
                        ["x"] if name in ("detect", "export-labelled") else [])])
                said = stderr.getvalue()
                if name == "fleet-bench" and value != "abc":
                    continue  # counts and seconds of a load test: out of range, not unparsable
                assert "invalid _" not in said and "Traceback" not in said, (name, value, said)
                if value != "abc" and action.dest in ("threshold", "seconds", "duration"):
                    assert "error:" in said, (name, action.dest, value)  # refused, not taken
                tried += 1
    assert tried > 20
    for value in ("nan", "inf"):
        result = run_cli("bench", "--seconds", value)
        assert result.returncode == 2 and "must be a finite number of seconds" in result.stderr
