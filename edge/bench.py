"""`nightear bench`: what the pipeline costs on this machine, stage by stage.

CPU seconds per second of audio for each stage, fed 16-bit multichannel audio in 0.1-s blocks
as a microphone array delivers it (the test audio arrives as a plane wave from bearing 60 at the
simulated array, with independent noise on every microphone), the whole pipeline's real-time
factor with the array stage and without it (channels averaged), peak memory, start-up to the
first score, and a baseline in the same run: librosa.feature.melspectrogram plus the FP32 model
when one lies beside the INT8 file (`<name>.fp32.onnx`), else the INT8 model (librosa comes
with the `bench` or `train` extra; without it the baseline says so and the rest runs).

Everything streams in CHUNK_SECONDS pieces, the test audio, the simulated recording and the
baseline too, so peak memory does not grow with `--seconds` (a Pi with 1 GB must not swap).

`bearing` is the cost of one fine SRP-PHAT per scored window, as if an event were open all the
time; the daemon pays it only while one may be (`pipeline_windows_with_bearing` says for what
share of the test audio's windows it did).
"""

from __future__ import annotations

import resource
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from nightear.array import ArrayStage
from nightear.classifier import OnnxClassifier
from nightear.decision import DecisionConfig, EventTracker, WindowScore
from nightear.frontend import StreamingLogMel
from nightear.geometry import ArraySettings, plane_wave
from nightear.pipeline import Detector, DetectorOutput, FrameWindows, Pipeline
from nightear.sources import WavSource, int16_to_float

BLOCK_SECONDS = 0.1
CHUNK_SECONDS = 10.0  # audio made, recorded and timed this much at a time: memory stays flat
CONTEXT_SAMPLES = 64  # of the neighbouring chunks each chunk's plane wave sees
SOURCE_BEARING_DEG = 60.0
STARTUP_SNIPPET = """
import numpy as np
import msgspec
from nightear.classifier import OnnxClassifier
from nightear.decision import DecisionConfig
from nightear.frontend import FrontendConfig
from nightear.pipeline import Detector
c = OnnxClassifier({model!r}, msgspec.json.decode({frontend!r}, type=FrontendConfig))
d = Detector(c, DecisionConfig())
assert d.push(np.zeros(16000, np.float32)).scores
"""


def _cpu(fn) -> float:  # type: ignore[no-untyped-def]
    start = time.process_time()
    fn()
    return time.process_time() - start


def test_audio(rate: int, seconds: float, path: Path | None = None) -> Iterator[np.ndarray]:
    """`seconds` of mono audio in CHUNK_SECONDS pieces: a recording repeated, or noise with a
    rotor-like hum fading in and out. Made piece by piece, so memory does not grow with it."""
    total, chunk = int(seconds * rate), int(CHUNK_SECONDS * rate)
    recording = WavSource(path, rate).read_all() if path is not None else None
    noise = np.random.default_rng(0)
    for start in range(0, total, chunk):
        n = min(chunk, total - start)
        if recording is not None:
            yield recording[np.arange(start, start + n) % len(recording)]
            continue
        t = np.arange(start, start + n) / rate
        hum = sum(np.sin(2 * np.pi * k * 180.0 * t) / k for k in range(1, 8)) * (0.5 + 0.5 * np.sin(t / 5))
        yield (0.02 * hum + 0.01 * noise.standard_normal(n)).astype(np.float32)


def _recorded(chunks: Iterator[np.ndarray], rate: int, array: ArraySettings) -> Iterator[np.ndarray]:
    """Each mono chunk as the array's int16 channels record it, from SOURCE_BEARING_DEG, with
    independent noise on every microphone; each chunk's plane wave sees CONTEXT_SAMPLES of its
    neighbours, so the pieces join as one recording would."""
    geometry = array.geometry()
    noise = np.random.default_rng(1)
    before = np.zeros(CONTEXT_SAMPLES, np.float32)
    current = next(chunks, None)
    while current is not None:
        following = next(chunks, None)
        after = following[:CONTEXT_SAMPLES] if following is not None else np.zeros(0, np.float32)
        wide = np.concatenate((before, current, after))
        recorded = plane_wave(wide, rate, geometry, SOURCE_BEARING_DEG, 20.0, array.speed_of_sound)
        recorded = recorded[len(before) : len(before) + len(current)]
        mics = noise.standard_normal((len(current), geometry.mics)) * 0.003
        recorded[:, list(geometry.mic_channels)] += mics.astype(np.float32)
        yield np.clip(recorded * 32768, -32768, 32767).astype(np.int16)
        before, current = np.concatenate((before, current))[-CONTEXT_SAMPLES:], following


class _Stages:
    """Each stage timed alone on its own input, made by the stage before it (a first pass),
    chunk after chunk: the objects carry their state across chunks as they would live."""

    def __init__(self, classifier: OnnxClassifier, array: ArraySettings, rate: int):
        geometry, fe = array.geometry(), classifier.info.frontend
        self.classifier = classifier
        self.stage, self.timed_stage = ArrayStage(geometry, array, rate), ArrayStage(geometry, array, rate)
        self.stream = StreamingLogMel(fe, classifier.mel_basis)
        self.timed_stream = StreamingLogMel(fe, classifier.mel_basis)
        hop_frames = Detector(classifier, DecisionConfig()).windows.hop_frames
        self.windows = FrameWindows(fe.n_mels, classifier.window_frames, hop_frames)
        self.tracker = EventTracker(DecisionConfig(), classifier.info.threshold)
        self.cpu = dict.fromkeys(("to_float", "array", "frontend", "classifier", "decision"), 0.0)
        self.scored = 0

    def push(self, blocks: list[np.ndarray]) -> None:
        floats = [int16_to_float(b) for b in blocks]
        beamed = [self.stage.push(b) for b in floats]
        frames = [self.stream.push(b) for b in beamed]
        cut = [self.windows.push(f)[0] for f in frames]
        probs = np.concatenate([self.classifier.score(w) for w in cut])
        first = self.scored
        self.cpu["to_float"] += _cpu(lambda: [int16_to_float(b) for b in blocks])
        self.cpu["array"] += _cpu(lambda: [self.timed_stage.push(b) for b in floats])
        self.cpu["frontend"] += _cpu(lambda: [self.timed_stream.push(b) for b in beamed])
        self.cpu["classifier"] += _cpu(lambda: [self.classifier.score(w) for w in cut])
        self.cpu["decision"] += _cpu(lambda: [
            self.tracker.push(WindowScore(first + i, first + i + 1, float(p))) for i, p in enumerate(probs)])
        self.scored += len(probs)


def run(classifier: OnnxClassifier, audio: Callable[[], Iterator[np.ndarray]],
        array: ArraySettings) -> dict[str, object]:
    """Time every stage, the whole pipeline with and without the array stage, then the
    baseline, on the same audio (`audio()` makes it afresh, in CHUNK_SECONDS pieces)."""
    rate = classifier.info.frontend.sample_rate
    geometry = array.geometry()
    channels, block = geometry.device_channels, int(BLOCK_SECONDS * rate)
    stages = _Stages(classifier, array, rate)
    pipeline = Pipeline(classifier, DecisionConfig(), rate, channels, array)
    mixed = Pipeline(classifier, DecisionConfig(), rate, channels, None)
    whole = whole_mixed = 0.0
    located = samples = 0
    for raw in _recorded(audio(), rate, array):
        blocks = [raw[i : i + block] for i in range(0, len(raw), block)]
        stages.push(blocks)
        outputs: list[DetectorOutput] = []
        whole += _cpu(lambda: outputs.extend(pipeline.push(int16_to_float(b)) for b in blocks))  # noqa: B023
        located += sum(s.bearing is not None for o in outputs for s in o.scores)
        whole_mixed += _cpu(lambda: [mixed.push(int16_to_float(b)) for b in blocks])  # noqa: B023
        samples += len(raw)
    seconds = samples / rate
    # windows whose frames the stage still holds, to time one bearing per window
    recent = [(t, t + pipeline.detector.window_seconds)
              for t in np.arange(max(0.0, seconds - 7.0), seconds - 1.5, 0.25)]
    cpu = dict(stages.cpu, bearing=_cpu(lambda: [stages.stage.bearing(a, b) for a, b in recent])
               / len(recent) * stages.scored)
    check = stages.stage.bearing(*recent[-1])
    rss_pipeline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    baseline = _Baseline(classifier)  # after the pipeline's peak: librosa weighs ~135 MB
    for chunk in audio():
        baseline.push(chunk)
    return {
        "audio_seconds": seconds, "array": geometry.name, "channels": channels,
        "source_bearing_deg": SOURCE_BEARING_DEG,
        "heard_bearing_deg": None if check is None else round(
            (check.bearing_deg - array.heading_deg) % 360, 1),
        "sample_rate": rate, "block_seconds": BLOCK_SECONDS,
        "cpu_ms_per_audio_second": {k: round(v / seconds * 1000, 3) for k, v in cpu.items()},
        "pipeline_cpu_ms_per_audio_second": round(whole / seconds * 1000, 3),
        "pipeline_real_time_factor": round(seconds / whole, 1),
        "pipeline_windows_with_bearing": round(located / max(1, stages.scored), 3),
        "pipeline_without_array_real_time_factor": round(seconds / whole_mixed, 1),
        "peak_rss_mb_pipeline": round(rss_pipeline / 2**20, 1),
        "startup_to_first_score_s": _startup(classifier),
        "baseline": baseline.result(seconds),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 2**20, 1),
    }


def _startup(classifier: OnnxClassifier) -> float:
    """Seconds a fresh process takes from start to the first window scored."""
    started = time.perf_counter()
    snippet = STARTUP_SNIPPET.format(model=str(classifier.path),
                                     frontend=msgspec.json.encode(classifier.info.frontend).decode())
    subprocess.run([sys.executable, "-c", snippet],
                   capture_output=True, text=True, check=True)
    return round(time.perf_counter() - started, 3)


class _Baseline:
    """librosa's melspectrogram and the FP32 model on the same audio, in this process, chunk by
    chunk: frames and windows fall exactly where one call on the whole audio puts them."""

    def __init__(self, classifier: OnnxClassifier):
        self.librosa: Any = None
        try:
            import librosa
        except ImportError:
            return
        self.librosa = librosa
        fp32_path = classifier.path.with_name(classifier.path.stem + ".fp32.onnx")
        self.model = (OnnxClassifier(fp32_path, classifier.info.frontend) if fp32_path.is_file()
                      else classifier)
        self.fe, self.window_frames = classifier.info.frontend, classifier.window_frames
        self.stride = Detector(classifier, DecisionConfig()).windows.hop_frames  # as the daemon's
        self.samples = np.zeros(0, np.float32)  # not yet made into frames
        self.frames = np.zeros((self.fe.n_mels, 0), np.float32)  # not yet made into windows
        self.next_start = 0  # of the next window, in frames from the held frames' first
        self.feature_cpu = self.model_cpu = 0.0
        self._log_mel(np.zeros(self.fe.sample_rate, np.float32))  # librosa loads its parts lazily

    def _log_mel(self, y: np.ndarray) -> np.ndarray:
        fe = self.fe
        power = self.librosa.feature.melspectrogram(
            y=y, sr=fe.sample_rate, n_fft=fe.n_fft, hop_length=fe.hop_length, center=False,
            n_mels=fe.n_mels, fmin=fe.fmin, fmax=fe.fmax)
        return self.librosa.power_to_db(power, ref=1.0, amin=1e-10, top_db=None).astype(np.float32)

    def push(self, mono: np.ndarray) -> None:
        if self.librosa is None:
            return
        fe = self.fe
        self.samples = np.concatenate((self.samples, mono))
        n = fe.frames_in(len(self.samples))
        if n == 0:
            return
        y = self.samples[: fe.samples_for_frames(n)]
        logmel: list[np.ndarray] = []
        self.feature_cpu += _cpu(lambda: logmel.append(self._log_mel(y)))
        self.samples = self.samples[n * fe.hop_length :]
        self.frames = np.concatenate((self.frames, logmel[0]), axis=1)
        starts = range(self.next_start, self.frames.shape[1] - self.window_frames + 1, self.stride)
        if len(starts):
            windows = np.stack([self.frames[:, s : s + self.window_frames] for s in starts])
            self.model_cpu += _cpu(lambda: self.model.score(windows))
            self.next_start = starts[-1] + self.stride
        self.frames = self.frames[:, self.next_start :]
        self.next_start = 0

    def result(self, seconds: float) -> dict[str, object]:
        if self.librosa is None:
            return {"skipped": "librosa is not installed: pip install 'nightear[bench]' to compare "
                               "with librosa's melspectrogram and the FP32 model"}
        return {"model": self.model.path.name,
                "cpu_ms_per_audio_second": {
                    "librosa_melspectrogram": round(self.feature_cpu / seconds * 1000, 3),
                    "model": round(self.model_cpu / seconds * 1000, 3)},
                "real_time_factor": round(seconds / (self.feature_cpu + self.model_cpu), 1)}
