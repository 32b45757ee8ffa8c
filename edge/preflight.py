"""`nightear check`: do, once and at once, what `listen` will do, and name each part that fails.

A config that validates can still point the store at a read-only folder, the clips at a folder
the service user cannot write, or name a model whose graph gives the wrong shape; `listen`
would find out at the first event, in the night. Each probe here does the real operation (open
the store and take its write lock, write and remove a file, score one window of silence through
the real front-end) and returns what it found, or raises a NightearError naming the key, the
path and the reason.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import numpy as np

from nightear.classifier import OnnxClassifier
from nightear.config import Settings
from nightear.decision import mismatch
from nightear.errors import AudioError, ConfigError, ModelError, NightearError, os_reason
from nightear.frontend import log_mel
from nightear.geometry import ArrayGeometry
from nightear.pipeline import Pipeline

PROBE_PREFIX = ".nightear-check-"  # the probe file's name: hidden, and nightear's own
NO_CAPTURE_DEVICE = ("no capture device found: check that the microphone is plugged in and listed "
                     "by `arecord -l`, and that this user is in the `audio` group")


def check(settings: Settings, load: Callable[[], OnnxClassifier], say: Callable[[str], None],
          error: Callable[[str], None], config_folder: Path | None = None) -> bool:
    """Try each part `listen` needs (`load` opens the model); say what works, name what fails.
    False when any part failed. `config_folder`: where relative paths in the config start."""
    failed = False

    def attempt(name: str, probe: Callable[[], str]) -> bool:
        nonlocal failed
        try:
            say(f"{name}: ok ({probe()})")
            return True
        except NightearError as exc:
            error(str(exc))
            failed = True
            return False
        except OSError as exc:  # a path the file system refuses (a name too long): this part fails
            error(f"{name}: {os_reason(exc)}")
            failed = True
            return False

    loaded: list[OnnxClassifier] = []

    def model() -> str:
        loaded.append(load())
        info, p = loaded[0].info, probe_model(loaded[0])
        return (f"{loaded[0].path}, {info.name} {info.version}, threshold {info.threshold}, "
                f"silence scores {p:.3f}")

    geometry = settings.geometry
    if attempt("model", model):
        chosen_for = loaded[0].info.metadata.get("decision")
        if note := mismatch(settings.decision, chosen_for, settings.model.hop_seconds):
            say(f"decision: warning: {note}")
        elif chosen_for:
            say(f"decision: ok (as the model's threshold was chosen: {chosen_for})")
        if geometry is not None:
            attempt("array", lambda: probe_array(settings, geometry, loaded[0]))
    if settings.store.path:
        attempt("store", lambda: probe_store(settings.store.path or ""))
    if settings.clips.folder:
        folder = Path(settings.clips.folder)
        attempt("clips", lambda: probe_folder(folder, "clips.folder"))
    if settings.metrics.path:
        metrics = settings.metrics.path
        attempt("metrics", lambda: probe_metrics(metrics))
    if settings.mqtt.enabled:
        attempt("mqtt", lambda: probe_mqtt(settings, config_folder))
    attempt("audio device", lambda: probe_device(settings))
    return not failed


def probe_array(settings: Settings, g: ArrayGeometry, classifier: OnnxClassifier) -> str:
    """Build the array stage as `listen` will: its band must suit the device's rate."""
    Pipeline(classifier, settings.decision, settings.audio.sample_rate, g.device_channels, settings.array)
    return (f"{g.name}: {g.source}; {g.mics} mics on channels {list(g.mic_channels)} of "
            f"{g.device_channels}, aperture {g.aperture_m * 1000:.0f} mm, heading "
            f"{settings.array.heading_deg:.0f} deg, beam {'on' if settings.array.beamform else 'off'}")


def probe_mqtt(settings: Settings, config_folder: Path | None) -> str:
    """Connect to the brokers as the unit's MQTT sink will."""
    import socket

    from nightear.sinks.broker import probe_brokers

    return probe_brokers(settings.mqtt, settings.node or socket.gethostname(), settings.store.path,
                         config_folder)


def probe_device(settings: Settings) -> str:
    """Find the microphone and ask PortAudio whether it takes the config's format."""
    from nightear.sources import MicSource, list_devices

    if not list_devices():
        raise AudioError(NO_CAPTURE_DEVICE)
    mic = MicSource(settings.audio, settings.capture_channels)
    mic.check()
    return f"{mic.device_info['name']!r}, {mic.channels} ch, {settings.audio.sample_rate} Hz"


def probe_model(classifier: OnnxClassifier) -> float:
    """Score one window of digital silence; the drone probability, or ModelError."""
    fe = classifier.info.frontend
    silence = np.zeros(fe.samples_for_frames(classifier.window_frames), dtype=np.float32)
    window = log_mel(silence, fe, classifier.mel_basis)[None, :, : classifier.window_frames]
    try:
        scores = classifier.score(window)
    except Exception as exc:  # a wrong graph fails in onnxruntime or in the reshape after it
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{classifier.path}: scoring one window of silence failed: the model's "
                         f"output does not have shape (batch,) ({reason})") from None
    if not np.isfinite(scores).all() or not 0.0 <= float(scores[0]) <= 1.0:
        raise ModelError(f"{classifier.path}: scored silence as {float(scores[0])}, not a probability "
                         "in [0, 1]")
    return float(scores[0])


def probe_store(path: str) -> str:
    """Open the store as `listen` does and take its write lock, then let it go."""
    from nightear.sinks.store import EventStore, refuse_foreign

    store_path = Path(path)
    if store_path.is_dir():
        raise ConfigError(f"store.path {store_path}: is a folder, not a database file")
    existed = store_path.exists()
    try:
        refuse_foreign(store_path)  # reads only: a foreign file or a FIFO is named, never changed
        EventStore(store_path).close()
    except ConfigError as exc:
        raise ConfigError(f"store.path {exc}") from None
    try:
        with closing(sqlite3.connect(store_path, isolation_level=None, timeout=10.0)) as db:
            db.execute("BEGIN IMMEDIATE")  # the lock every save takes: fails when read-only
            db.execute("ROLLBACK")
    except sqlite3.Error as exc:
        raise ConfigError(f"store.path {store_path}: cannot write the event store ({exc})") from None
    return f"{store_path}{'' if existed else ', created'}"


def probe_folder(folder: Path, key: str) -> str:
    """Create `folder` if needed, then write and remove a probe file in it."""
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{key} {folder}: is a file, not a folder")
    try:
        folder.mkdir(mode=0o750, parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(dir=folder, prefix=PROBE_PREFIX)
        try:
            os.write(handle, b"nightear check\n")
        finally:
            os.close(handle)
            os.unlink(probe)
    except OSError as exc:
        raise ConfigError(f"{key} {folder}: not writable ({exc.strerror or exc})") from None
    return str(folder)


def probe_metrics(path: str) -> str:
    """The metrics file is replaced by a rename, so its folder must take new files."""
    metrics = Path(path)
    if metrics.is_dir():
        raise ConfigError(f"metrics.path {metrics}: is a folder, not a file")
    probe_folder(metrics.parent, f"metrics.path {metrics}: its folder")
    return path
