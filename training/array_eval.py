"""What the microphone array buys: bearing error and detection recall against SNR.

Held-out drone passes (3-5 s, test split) arrive at each preset array as a plane wave from a
random bearing and elevation (0-45 degrees), over held-out night ambience arriving from eight
directions plus microphone hiss (`array_recording`, the noise at the scene's night
level). Each recording then runs through the daemon's own `Pipeline`:

- bearing error: every window's bearing against the true one (median, 90th percentile);
- recall: the share of drone windows over the model's threshold, from one microphone alone,
  from the microphones averaged, and from the steered beam;
- false alarms: the share of windows over the threshold on night ambience alone (no drone),
  with the beam and without, so array gain is not bought with a jumpier detector.

`python -m nightear_training array-eval` writes `<model>.array.json` and `.array.md`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from nightear.classifier import OnnxClassifier
from nightear.decision import DecisionConfig
from nightear.geometry import PRESETS, ArrayGeometry, ArraySettings, plane_wave
from nightear.pipeline import Pipeline
from nightear_training.propagation import SAMPLE_RATE, Scene, ambience_at, rms_db
from nightear_training.signals import random_crop

SNRS_DB = (-20, -15, -10, -5, 0, 5, 10, 20)
RECALL_PRESET = "respeaker-4mic"
MAX_PASSES = 40  # drone passes per SNR and preset: enough for a stable median, a few minutes
MAX_NIGHT_CLIPS = 60


def array_recording(drone: np.ndarray, ambience: np.ndarray, geometry: ArrayGeometry,
                    azimuth_deg: float, elevation_deg: float, snr_db: float,
                    rng: np.random.Generator, sample_rate: int = SAMPLE_RATE, noise_dbfs: float = -50.0,
                    ambience_sources: int = 8, self_noise_share: float = 0.5) -> np.ndarray:
    """An array recording of `drone` arriving as a plane wave from a direction, `snr_db` above
    the noise at the microphones (mean power over mics, whole band), the noise `noise_dbfs`
    RMS.

    The noise is night ambience arriving from `ambience_sources` random directions (each a
    different stretch of `ambience`, so they do not cohere) plus independent white noise on
    every microphone, the electronics' own hiss, holding `self_noise_share` of the noise power.
    Returns (len(drone), device_channels) float32; channels without a microphone stay silent.
    """
    n, mics = len(drone), list(geometry.mic_channels)
    signal = plane_wave(drone, sample_rate, geometry, azimuth_deg, elevation_deg)
    field = np.zeros_like(signal)
    for _ in range(ambience_sources):
        stretch = random_crop(np.tile(ambience, n // len(ambience) + 2), n, rng)
        field += plane_wave(stretch, sample_rate, geometry, rng.uniform(0, 360), rng.uniform(0, 60))
    hiss = np.zeros_like(signal)
    hiss[:, mics] = rng.standard_normal((n, len(mics)))

    def power(x: np.ndarray) -> float:
        return float(np.mean(x[:, mics].astype(np.float64) ** 2)) + 1e-20

    noise = (field * np.sqrt((1 - self_noise_share) / power(field))
             + hiss * np.sqrt(self_noise_share / power(hiss))) * 10.0 ** (noise_dbfs / 20.0)
    gain = np.sqrt(10.0 ** (snr_db / 10.0) * power(noise) / power(signal))
    return (signal * gain + noise).astype(np.float32)


def _angle_error(a: float, b: float) -> float:
    return abs((a - b + 180.0) % 360.0 - 180.0)


def _run(classifier: OnnxClassifier, recording: np.ndarray, rate: int, channels: int,
         array: ArraySettings | None, threshold: float) -> list:  # type: ignore[type-arg]
    """Window scores, the recording fed in 1-s blocks as `detect` does (with a tiny threshold
    every window gets a bearing)."""
    decision = DecisionConfig(threshold=threshold)
    pipeline = Pipeline(classifier, decision, rate, channels, array)
    scores = [s for i in range(0, len(recording), rate)
              for s in pipeline.push(recording[i : i + rate]).scores]
    return scores + pipeline.finish().scores


def _scenes(passes: Sequence[np.ndarray], night: Sequence[np.ndarray], geometry: ArrayGeometry,
            snr: float, noise_dbfs: float, rate: int, seed: int) -> Iterator[tuple[float, np.ndarray]]:
    """Each drone pass from a random bearing and elevation over a random night clip, as
    (true azimuth, array recording); the same draws at every SNR for the same seed."""
    rng = np.random.default_rng(seed)
    for drone in passes:
        azimuth, elevation = rng.uniform(0, 360), rng.uniform(0, 45)
        bed = night[int(rng.integers(len(night)))]
        yield azimuth, array_recording(drone, bed, geometry, azimuth, elevation, snr, rng, rate,
                                       noise_dbfs)


def bearing_errors(classifier: OnnxClassifier, passes: Sequence[np.ndarray],
                   night: Sequence[np.ndarray], noise_dbfs: float, seed: int = 0,
                   presets: Sequence[str] = tuple(PRESETS), snrs: Sequence[float] = SNRS_DB
                   ) -> dict[str, dict[str, dict[str, float]]]:
    """Per preset and SNR: median and 90th-percentile bearing error (degrees) over windows."""
    rate = classifier.info.frontend.sample_rate
    out: dict[str, dict[str, dict[str, float]]] = {}
    for preset in presets:
        geometry, settings = PRESETS[preset], ArraySettings(preset=preset)
        out[preset] = {}
        for snr in snrs:
            errors = []
            for azimuth, recording in _scenes(passes, night, geometry, snr, noise_dbfs, rate, seed):
                scores = _run(classifier, recording, rate, geometry.device_channels, settings, 1e-9)
                errors += [_angle_error(s.bearing.bearing_deg, azimuth) for s in scores
                           if s.bearing is not None]
            out[preset][str(snr)] = {"median_deg": round(float(np.median(errors)), 2),
                                     "p90_deg": round(float(np.percentile(errors, 90)), 2),
                                     "windows": len(errors)}
    return out


def recall_with_and_without_beam(classifier: OnnxClassifier, passes: Sequence[np.ndarray],
                                 night: Sequence[np.ndarray], noise_dbfs: float, seed: int = 0,
                                 preset: str = RECALL_PRESET, snrs: Sequence[float] = SNRS_DB
                                 ) -> dict[str, object]:
    """Window recall at the model's threshold for one mic, the mics averaged and the beam;
    and the share of windows over it on ambience alone."""
    rate, threshold = classifier.info.frontend.sample_rate, classifier.info.threshold
    geometry = PRESETS[preset]
    beam, mix = ArraySettings(preset=preset), ArraySettings(preset=preset, beamform=False)

    def over(recording: np.ndarray, array: ArraySettings | None, channels: int) -> list[bool]:
        return [s.p >= threshold for s in _run(classifier, recording, rate, channels, array, threshold)]

    recall: dict[str, dict[str, float]] = {"one_mic": {}, "mics_averaged": {}, "beam": {}}
    for snr in snrs:
        hits: dict[str, list[bool]] = {name: [] for name in recall}
        for _, recording in _scenes(passes, night, geometry, snr, noise_dbfs, rate, seed):
            mic = geometry.mic_channels[0]
            hits["one_mic"] += over(recording[:, mic : mic + 1], None, 1)
            hits["mics_averaged"] += over(recording, mix, geometry.device_channels)
            hits["beam"] += over(recording, beam, geometry.device_channels)
        for name, values in hits.items():
            recall[name][str(snr)] = round(float(np.mean(values)), 4)
    rng = np.random.default_rng(seed + 1)
    quiet: dict[str, list[bool]] = {"mics_averaged": [], "beam": []}
    for bed in night:
        silence = np.zeros(max(len(bed), 5 * rate), np.float32)
        recording = array_recording(silence, bed, geometry, 0.0, 0.0, -200.0, rng, rate, noise_dbfs)
        quiet["mics_averaged"] += over(recording, mix, geometry.device_channels)
        quiet["beam"] += over(recording, beam, geometry.device_channels)
    return {"preset": preset, "threshold": threshold, "window_recall_vs_snr_db": recall,
            "night_windows_over_threshold": {k: round(float(np.mean(v)), 5) for k, v in quiet.items()},
            "night_windows": len(quiet["beam"])}


def array_report(classifier: OnnxClassifier, passes: Sequence[np.ndarray], night: Sequence[np.ndarray],
                 scene: Scene = Scene(), seed: int = 0, snrs: Sequence[float] = SNRS_DB,
                 log: Callable[[str], None] = print) -> dict[str, object]:
    rate = classifier.info.frontend.sample_rate
    noise_dbfs = float(np.mean([rms_db(ambience_at(bed, scene, rate)) for bed in night]))
    log(f"array evaluation: {len(passes)} drone passes, {len(night)} night clips, noise "
        f"{noise_dbfs:.1f} dBFS")
    bearings = bearing_errors(classifier, passes, night, noise_dbfs, seed, snrs=snrs)
    log(f"bearing error (median deg) by SNR: "
        f"{ {p: {s: v['median_deg'] for s, v in e.items()} for p, e in bearings.items()} }")
    recall = recall_with_and_without_beam(classifier, passes, night, noise_dbfs, seed, snrs=snrs)
    log(f"window recall by SNR: {recall['window_recall_vs_snr_db']}")
    return {"model": f"{classifier.info.name}-{classifier.info.version}", "drone_passes": len(passes),
            "night_clips": len(night), "noise_dbfs": round(noise_dbfs, 1), "scene": asdict(scene),
            "bearing_error_vs_snr_db": bearings, "detection": recall}


def markdown(report: dict[str, object]) -> str:
    """The report as tables for the README and the model card."""
    bearings: dict[str, dict[str, dict[str, float]]] = report["bearing_error_vs_snr_db"]  # type: ignore[assignment]
    detection: dict[str, object] = report["detection"]  # type: ignore[assignment]
    snrs = list(next(iter(bearings.values())))
    lines = [f"# Array evaluation of {report['model']}", "",
             f"{report['drone_passes']} held-out drone passes arriving as plane waves from random bearings "
             f"and elevations (0-45 degrees), over {report['night_clips']} held-out night recordings "
             f"arriving from eight directions plus microphone hiss (half the noise power), noise at "
             f"{report['noise_dbfs']} dBFS. SNR: drone over noise power at the microphones, whole band.",
             "", "## Bearing error (degrees, median / 90th percentile over windows)", "",
             "| SNR dB | " + " | ".join(bearings) + " |", "| --- |" + " --- |" * len(bearings)]
    for snr in snrs:
        lines.append(f"| {snr} | " + " | ".join(
            f"{b[snr]['median_deg']:.1f} / {b[snr]['p90_deg']:.1f}" for b in bearings.values()) + " |")
    recall: dict[str, dict[str, float]] = detection["window_recall_vs_snr_db"]  # type: ignore[assignment]
    lines += ["", f"## Window recall at the model's threshold ({detection['threshold']}), "
              f"{detection['preset']}", "",
              "| SNR dB | one mic | mics averaged | beam |", "| --- | --- | --- | --- |"]
    for snr in snrs:
        lines.append(f"| {snr} | " + " | ".join(f"{recall[k][snr]:.3f}" for k in
                                                ("one_mic", "mics_averaged", "beam")) + " |")
    quiet: dict[str, float] = detection["night_windows_over_threshold"]  # type: ignore[assignment]
    lines += ["", f"Night ambience alone ({detection['night_windows']} windows): share over the "
              f"threshold {quiet['mics_averaged']} averaged, {quiet['beam']} with the beam.", ""]
    return "\n".join(lines)


def evaluate_array(model: Path, data_root: Path | None = None, out_dir: Path | None = None,
                   max_passes: int = MAX_PASSES, snrs: Sequence[float] = SNRS_DB,
                   log: Callable[[str], None] = print) -> dict[str, object]:
    """Run the array evaluation on the shared test split; write `<name>.array.json` and `.md`."""
    from nightear_training.data import load_clips
    from nightear_training.evaluate import NIGHT_KINDS, _passes
    from nightear_training.recipe import load_bank

    classifier = OnnxClassifier(model)
    sources = tuple(json.loads(classifier.info.metadata.get("training_sources",
                                                            '["drone-audio-dataset"]')))
    test = [c for c in load_clips(data_root, sources) if c.split == "test"]
    audio = load_bank(test, classifier.info.frontend)
    passes = _passes(test, audio, classifier.info.frontend.sample_rate)[:max_passes]
    night = [audio[c.path] for c in test if c.kind in NIGHT_KINDS][:MAX_NIGHT_CLIPS]
    report = array_report(classifier, passes, night, snrs=snrs, log=log)
    out_dir = out_dir or model.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / f"{classifier.info.name}.array"
    Path(f"{stem}.json").write_text(json.dumps(report, indent=1) + "\n")
    Path(f"{stem}.md").write_text(markdown(report))
    log(f"wrote {stem}.json and {stem}.md")
    return report
