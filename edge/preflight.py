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
from contextlib import closing
from pathlib import Path

import numpy as np

from nightear.classifier import OnnxClassifier
from nightear.errors import ConfigError, ModelError
from nightear.frontend import log_mel

PROBE_PREFIX = ".nightear-check-"  # the probe file's name: hidden, and nightear's own


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
    from nightear.sinks.store import EventStore

    store_path = Path(path)
    if store_path.is_dir():
        raise ConfigError(f"store.path {store_path}: is a folder, not a database file")
    existed = store_path.exists()
    try:
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


def probe_folder(folder: Path, key: str) -> None:
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


def probe_metrics(path: str) -> None:
    """The metrics file is replaced by a rename, so its folder must take new files."""
    metrics = Path(path)
    if metrics.is_dir():
        raise ConfigError(f"metrics.path {metrics}: is a folder, not a file")
    probe_folder(metrics.parent, f"metrics.path {metrics}: its folder")
