"""`nightear bench`: what the pipeline costs on this machine, stage by stage.

CPU seconds per second of audio for each stage, fed 16-bit multichannel audio in 0.1-s blocks
as a microphone array delivers it (the test audio arrives as a plane wave from bearing 60 at the
simulated array, with independent noise on every microphone), the whole pipeline's real-time
factor with the array stage and without it (channels averaged), peak memory, start-up to the
first score, and a baseline in the same run: librosa.feature.melspectrogram plus the FP32 model
when one lies beside the INT8 file (`<name>.fp32.onnx`), else the INT8 model.

`bearing` is the cost of one fine SRP-PHAT per scored window, as if an event were open all the
time; the daemon pays it only while one may be (`pipeline_windows_with_bearing` says for what
share of the test audio's windows it did).
"""

from __future__ import annotations

import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from nightear.array import ArraySettings, ArrayStage, plane_wave
from nightear.classifier import OnnxClassifier
from nightear.decision import DecisionConfig, EventTracker, WindowScore
from nightear.frontend import StreamingLogMel
from nightear.pipeline import Detector, DetectorOutput, FrameWindows, Pipeline
from nightear.sources import WavSource, int16_to_float

BLOCK_SECONDS = 0.1
SOURCE_BEARING_DEG = 60.0
STARTUP_SNIPPET = """
import numpy as np
from nightear.classifier import OnnxClassifier
from nightear.decision import DecisionConfig
from nightear.pipeline import Detector
c = OnnxClassifier({model!r})
d = Detector(c, DecisionConfig())
assert d.push(np.zeros(16000, np.float32)).scores
"""


def _cpu(fn) -> float:  # type: ignore[no-untyped-def]
    start = time.process_time()
    fn()
    return time.process_time() - start


def test_audio(rate: int, seconds: float, path: Path | None = None) -> np.ndarray:
    """A recording repeated to `seconds`, or noise with a rotor-like hum fading in and out."""
    if path is not None:
        return np.resize(WavSource(path, rate).read_all(), int(seconds * rate))
    t = np.arange(int(seconds * rate)) / rate
    hum = sum(np.sin(2 * np.pi * k * 180.0 * t) / k for k in range(1, 8)) * (0.5 + 0.5 * np.sin(t / 5))
    noise = np.random.default_rng(0).standard_normal(len(t))
    return (0.02 * hum + 0.01 * noise).astype(np.float32)


def run(classifier: OnnxClassifier, mono: np.ndarray, array: ArraySettings) -> dict[str, object]:
    rate = classifier.info.frontend.sample_rate
    seconds = len(mono) / rate
    geometry = array.geometry()
    recorded = plane_wave(mono, rate, geometry, SOURCE_BEARING_DEG, 20.0, array.speed_of_sound)
    noise = np.random.default_rng(1).standard_normal((len(mono), geometry.mics)) * 0.003
    recorded[:, list(geometry.mic_channels)] += noise.astype(np.float32)
    raw = np.clip(recorded * 32768, -32768, 32767).astype(np.int16)
    block = int(BLOCK_SECONDS * rate)
    blocks = [raw[i : i + block] for i in range(0, len(raw), block)]
    channels = geometry.device_channels
    fe = classifier.info.frontend
    # each stage's input, made once by the stage before it, so each is timed alone
    floats = [int16_to_float(b) for b in blocks]
    stage = ArrayStage(geometry, array, rate)
    beamed = [stage.push(b) for b in floats]
    stream = StreamingLogMel(fe, classifier.mel_basis)
    frames = [stream.push(b) for b in beamed]
    detector = Detector(classifier, DecisionConfig())
    windows = FrameWindows(fe.n_mels, classifier.window_frames, detector.windows.hop_frames)
    cut = [windows.push(f)[0] for f in frames]
    probs = np.concatenate([classifier.score(w) for w in cut])
    # windows whose frames the stage still holds, to time one bearing per window
    recent = [(t, t + detector.window_seconds)
              for t in np.arange(max(0.0, seconds - 7.0), seconds - 1.5, 0.25)]
    tracker = EventTracker(DecisionConfig(), classifier.info.threshold)
    stream.reset()
    again = ArrayStage(geometry, array, rate)
    stages = {
        "to_float": _cpu(lambda: [int16_to_float(b) for b in blocks]),
        "array": _cpu(lambda: [again.push(b) for b in floats]),
        "frontend": _cpu(lambda: [stream.push(b) for b in beamed]),
        "classifier": _cpu(lambda: [classifier.score(w) for w in cut]),
        "decision": _cpu(lambda: [tracker.push(WindowScore(i, i + 1, float(p)))
                                  for i, p in enumerate(probs)]),
        "bearing": _cpu(lambda: [stage.bearing(a, b) for a, b in recent]) / len(recent) * len(probs),
    }
    pipeline = Pipeline(classifier, DecisionConfig(), rate, channels, array)
    outputs: list[DetectorOutput] = []
    whole = _cpu(lambda: outputs.extend(pipeline.push(int16_to_float(b)) for b in blocks))
    located = sum(s.bearing is not None for o in outputs for s in o.scores)
    mixed = Pipeline(classifier, DecisionConfig(), rate, channels, None)
    whole_mixed = _cpu(lambda: [mixed.push(int16_to_float(b)) for b in blocks])
    check = stage.bearing(*recent[-1])
    rss_pipeline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "audio_seconds": seconds, "array": geometry.name, "channels": channels,
        "source_bearing_deg": SOURCE_BEARING_DEG,
        "heard_bearing_deg": None if check is None else round(
            (check.bearing_deg - array.heading_deg) % 360, 1),
        "sample_rate": rate, "block_seconds": BLOCK_SECONDS,
        "cpu_ms_per_audio_second": {k: round(v / seconds * 1000, 3) for k, v in stages.items()},
        "pipeline_cpu_ms_per_audio_second": round(whole / seconds * 1000, 3),
        "pipeline_real_time_factor": round(seconds / whole, 1),
        "pipeline_windows_with_bearing": round(located / max(1, len(probs)), 3),
        "pipeline_without_array_real_time_factor": round(seconds / whole_mixed, 1),
        "peak_rss_mb_pipeline": round(rss_pipeline / 2**20, 1),
        "startup_to_first_score_s": _startup(classifier.path),
        "baseline": _baseline(classifier, mono),
    }


def _startup(model: Path) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", STARTUP_SNIPPET.format(model=str(model))],
                   capture_output=True, text=True, check=True)
    return round(time.perf_counter() - started, 3)


def _baseline(classifier: OnnxClassifier, mono: np.ndarray) -> dict[str, object]:
    """librosa's melspectrogram and the FP32 model on the same audio, in this process."""
    import librosa

    fp32_path = classifier.path.with_name(classifier.path.stem + ".fp32.onnx")
    model = OnnxClassifier(fp32_path) if fp32_path.is_file() else classifier
    fe = classifier.info.frontend
    seconds = len(mono) / fe.sample_rate

    def features() -> np.ndarray:
        power = librosa.feature.melspectrogram(y=mono, sr=fe.sample_rate, n_fft=fe.n_fft,
                                               hop_length=fe.hop_length, center=False,
                                               n_mels=fe.n_mels, fmin=fe.fmin, fmax=fe.fmax)
        return librosa.power_to_db(power, ref=1.0, amin=1e-10, top_db=None).astype(np.float32)

    logmel = features()
    starts = range(0, logmel.shape[1] - classifier.window_frames + 1, 16)
    windows = np.stack([logmel[:, s : s + classifier.window_frames] for s in starts])
    feature_cpu, model_cpu = _cpu(features), _cpu(lambda: model.score(windows))
    return {"model": model.path.name,
            "cpu_ms_per_audio_second": {"librosa_melspectrogram": round(feature_cpu / seconds * 1000, 3),
                                        "model": round(model_cpu / seconds * 1000, 3)},
            "real_time_factor": round(seconds / (feature_cpu + model_cpu), 1)}
