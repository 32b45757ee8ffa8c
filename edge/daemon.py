"""The listening daemon: microphone -> pipeline -> live events, until told to stop.

One loop owns the device: it opens the microphone (or array), pushes every block through the
same `Pipeline` as `nightear detect`, stores an event in SQLite and then writes its line when it
opens (the live alert) and when it closes, and reopens a failing device with backoff instead
of dying. SIGTERM and SIGINT stop it cleanly: the open event is closed and written before exit.
"""

from __future__ import annotations

import json
import signal
import socket
import sqlite3
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TextIO

import numpy as np

from nightear.classifier import OnnxClassifier
from nightear.config import Settings
from nightear.decision import EventChange
from nightear.errors import AudioError
from nightear.pipeline import DetectorOutput, Pipeline, score_line
from nightear.sinks.clips import AudioHistory, ClipWriter
from nightear.sinks.heartbeat import LowFrequencyMeter, heartbeat_message
from nightear.sinks.metrics import Counters, prometheus_text, sd_notify, write_atomically
from nightear.sinks.mqtt import EventForwarder
from nightear.sinks.store import EventStore, StoredBearing, StoredEvent
from nightear.sources import MicSource

BACKOFF_SECONDS = (1.0, 2.0, 5.0, 10.0, 30.0)  # waits before reopening a failed device


class Listener:
    """State of one listening run: what it has heard and how the device behaved."""

    def __init__(self, settings: Settings, classifier: OnnxClassifier, out: TextIO = sys.stdout,
                 scores: bool = False, duration_s: float | None = None,
                 log: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True),
                 config_folder: Path | None = None):
        self.settings, self.classifier, self.out = settings, classifier, out
        self.node = settings.node or socket.gethostname()
        self.store = EventStore(settings.store.path) if settings.store.path else None
        self.clips = (ClipWriter(settings.clips, classifier.info.frontend, classifier.mel_basis)
                      if settings.clips.folder else None)
        self.history: AudioHistory | None = None
        self._event_id = ""
        self.scores, self.duration_s, self.log = scores, duration_s, log
        self.stop = threading.Event()
        self.counters = Counters()
        self._last_metrics = self._last_ping = 0.0
        self.low_freq = LowFrequencyMeter(classifier.info.frontend.sample_rate)
        self.mqtt = self._forwarder(config_folder)

    def _forwarder(self, config_folder: Path | None) -> EventForwarder | None:
        """The MQTT sink, sending from the store (so it needs one), when brokers are configured."""
        s = self.settings
        if not s.mqtt.enabled or self.scores:
            return None
        return EventForwarder(
            s.mqtt, s.store.path, self.node, log=self.log, position=s.position,
            heading_deg=s.array.heading_deg if s.array.enabled else None, base=config_folder,
            heartbeat=lambda pending: heartbeat_message(s, self.node, self.counters, self.classifier.info,
                                                        self.low_freq, pending))

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop.set())

    def run(self) -> None:
        """Listen until stopped (or `duration_s` of audio); with MQTT, send while listening."""
        if self.mqtt is not None:
            # sounddevice's import starts PortAudio with stderr (fd 2) sent to /dev/null for a
            # moment: do it before the sender thread starts, or a broker's refusal can vanish
            import sounddevice  # noqa: F401

            self.mqtt.start()
        try:
            self._run_device()
        finally:
            if self.mqtt is not None:
                self.mqtt.close()

    def _run_device(self) -> None:
        """Listen until stopped (or `duration_s` of audio); reopen the device when it fails."""
        failures = 0
        while not self.stop.is_set():
            try:
                self._listen_once()
                failures = 0
            except AudioError as exc:
                wait = BACKOFF_SECONDS[min(failures, len(BACKOFF_SECONDS) - 1)]
                if failures == 0 and self.counters.audio_seconds == 0.0:
                    raise  # never opened at all: a configuration problem, say so and exit
                failures += 1
                self.counters.device_reopens += 1
                self.log(f"nightear: warning: {exc}; reopening in {wait:.0f} s")
                self.stop.wait(wait)

    def _listen_once(self) -> None:
        s = self.settings
        source = MicSource(s.audio, s.capture_channels)
        pipeline = Pipeline(self.classifier, s.decision, source.sample_rate, source.channels,
                            s.array, s.model.hop_seconds)
        started = datetime.now(UTC)
        if self.clips is not None:
            self.history = AudioHistory(s.clips.preroll_seconds + s.clips.max_seconds + 5.0,
                                        pipeline.sample_rate)
        array = f", array {s.geometry.name}" if s.geometry is not None else ""
        self.log(f"nightear: listening on {source.device_info['name']!r} "
                 f"({source.channels} ch, {source.sample_rate} Hz{array})")
        try:
            for block in source.blocks(self.stop):
                if self.duration_s is not None:
                    remaining = self.duration_s - self.counters.audio_seconds
                    block = block[: max(0, round(remaining * source.sample_rate))]
                cpu = time.process_time()
                output = pipeline.push(block)
                if self.history is not None:
                    self.history.push(output.audio)
                self.low_freq.push(output.audio)
                self._account(block, output, time.process_time() - cpu, source)
                if self.scores:
                    for score in output.scores:
                        self._emit(score_line(score))
                for change in output.changes:
                    self._emit_event(change, started)
                if self.duration_s is not None and self.counters.audio_seconds >= self.duration_s - 1e-9:
                    self.stop.set()
        finally:
            self.log(f"nightear: stopped after {self.counters.audio_seconds:.1f} s of audio, "
                     f"{self.counters.events} events")
            for change in pipeline.finish().changes:
                self._emit_event(change, started)
            self._write_metrics()
            if source.overflows or source.ring.dropped_frames:
                self.log(f"nightear: {source.overflows} input overflows, "
                         f"{source.ring.dropped_frames} frames dropped")

    def _account(self, block: np.ndarray, output: DetectorOutput, cpu_seconds: float,
                 source: MicSource) -> None:
        """Count, ping systemd's watchdog from the pipeline loop, write metrics now and then."""
        c = self.counters
        c.audio_seconds += len(block) / source.sample_rate
        c.cpu_seconds += cpu_seconds
        c.windows_scored += len(output.scores)
        c.events += sum(change.kind == "open" for change in output.changes)
        c.input_overflows, c.dropped_frames = source.overflows, source.ring.dropped_frames
        now = time.monotonic()
        if now - self._last_ping >= 1.0:
            sd_notify("READY=1\nWATCHDOG=1" if not self._last_ping else "WATCHDOG=1")
            self._last_ping = now
        if now - self._last_metrics >= self.settings.metrics.interval_seconds:
            self._write_metrics()
            self._last_metrics = now

    def _write_clip(self, event: StoredEvent, start_s: float, end_s: float) -> str | None:
        """The event's audio with pre-roll; a disk problem is reported, detection goes on."""
        if self.clips is None or self.history is None:
            return None
        c, rate = self.settings.clips, self.history.sample_rate
        first = round((start_s - c.preroll_seconds) * rate)
        last = min(round(end_s * rate), first + round((c.preroll_seconds + c.max_seconds) * rate))
        name = f"{event.start[:19].replace(':', '')}-{event.id[:8]}"
        try:
            wav, _ = self.clips.write(name, self.history.span(first, last))
        except OSError as exc:
            self.log(f"nightear: warning: clip {name} not written ({exc.strerror or exc})")
            return None
        return str(wav)

    def _write_metrics(self) -> None:
        """Counters to the textfile; a disk problem is reported, detection goes on."""
        if not self.settings.metrics.path:
            return
        try:
            write_atomically(Path(self.settings.metrics.path), prometheus_text(self.counters, self.node))
        except OSError as exc:
            self.log(f"nightear: warning: metrics not written to {self.settings.metrics.path} "
                     f"({exc.strerror or exc})")

    def _emit_event(self, change: EventChange, started: datetime) -> None:
        """Store the event (durable first), then print it."""
        if self.scores:
            return
        if change.kind == "open":
            self._event_id = str(uuid.uuid4())
        e, info = change.event, self.classifier.info
        stored = StoredEvent(
            id=self._event_id, node=self.node, state="open" if change.kind == "open" else "closed",
            start=(started + timedelta(seconds=e.start_s)).isoformat(timespec="milliseconds"),
            end=(started + timedelta(seconds=e.end_s)).isoformat(timespec="milliseconds"),
            peak_confidence=round(e.peak_confidence, 4), mean_confidence=round(e.mean_confidence, 4),
            windows=e.windows, model=f"{info.name}-{info.version}", model_sha256=info.sha256,
            bearing_deg=e.bearing_deg, bearing_spread_deg=e.bearing_spread_deg,
            elevation_deg=e.elevation_deg, bearing_mirror_deg=e.bearing_mirror_deg,
        )
        track = [StoredBearing((started + timedelta(seconds=p.t_s)).isoformat(timespec="milliseconds"),
                               p.bearing_deg, p.elevation_deg, p.coherence, round(p.p, 4))
                 for p in e.track]
        if change.kind == "close":
            stored = replace(stored, clip=self._write_clip(stored, e.start_s, e.end_s))
        if self.store is not None:
            try:
                self.store.save(stored, track)
            except (sqlite3.Error, OSError) as exc:  # a full disk: the line below still goes out
                self.log(f"nightear: warning: event {stored.id} not stored ({exc})")
            if self.mqtt is not None:
                self.mqtt.wake()
        line = {k: v for k, v in asdict(stored).items() if v is not None or not k.startswith(
            ("bearing", "elevation"))}
        self._emit({"event": change.kind, **line, "start_s": round(e.start_s, 3),
                    "end_s": round(e.end_s, 3)})

    def _emit(self, obj: dict[str, object]) -> None:
        self.out.write(json.dumps(obj) + "\n")
        self.out.flush()
