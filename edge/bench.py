"""`nightear bench`: what the pipeline costs on this machine, stage by stage.

CPU seconds per second of audio for each stage (4-channel 16-bit input fed in 0.1-s blocks, as
a microphone array delivers it), the whole pipeline's real-time factor, peak memory, start-up
to the first score, and a baseline in the same run: librosa.feature.melspectrogram plus the FP32
model when one lies beside the INT8 file (`<name>.fp32.onnx`), else the INT8 model.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from nightear.classifier import OnnxClassifier
from nightear.decision import DecisionConfig, EventTracker, WindowScore
from nightear.frontend import StreamingLogMel
from nightear.pipeline import Detector, FrameWindows
from nightear.sources import WavSource, int16_to_mono

BLOCK_SECONDS = 0.1
CHANNELS = 4
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


def run(classifier: OnnxClassifier, mono: np.ndarray) -> dict[str, object]:
    rate = classifier.info.frontend.sample_rate
    seconds = len(mono) / rate
    raw = (np.repeat(mono[:, None], CHANNELS, axis=1) * 32767).astype(np.int16)
    block = int(BLOCK_SECONDS * rate)
    blocks = [raw[i : i + block] for i in range(0, len(raw), block)]
    detector = Detector(classifier, DecisionConfig())
    fe = classifier.info.frontend
    # each stage's input, made once by the stage before it, so each is timed alone
    mixed = [int16_to_mono(b) for b in blocks]
    stream = StreamingLogMel(fe, classifier.mel_basis)
    frames = [stream.push(b) for b in mixed]
    windows = FrameWindows(fe.n_mels, classifier.window_frames, detector.windows.hop_frames)
    cut = [windows.push(f)[0] for f in frames]
    probs = np.concatenate([classifier.score(w) for w in cut])
    tracker = EventTracker(DecisionConfig(), classifier.info.threshold)
    stream.reset()
    stages = {
        "mixdown": _cpu(lambda: [int16_to_mono(b) for b in blocks]),
        "frontend": _cpu(lambda: [stream.push(b) for b in mixed]),
        "classifier": _cpu(lambda: [classifier.score(w) for w in cut]),
        "decision": _cpu(lambda: [tracker.push(WindowScore(i, i + 1, float(p)))
                                  for i, p in enumerate(probs)]),
    }
    whole = _cpu(lambda: [detector.push(int16_to_mono(b)) for b in blocks])
    rss_pipeline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "audio_seconds": seconds, "channels": CHANNELS, "block_seconds": BLOCK_SECONDS,
        "cpu_ms_per_audio_second": {k: round(v / seconds * 1000, 3) for k, v in stages.items()},
        "pipeline_cpu_ms_per_audio_second": round(whole / seconds * 1000, 3),
        "pipeline_real_time_factor": round(seconds / whole, 1),
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
