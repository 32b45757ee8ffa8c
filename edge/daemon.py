"""The listening daemon: microphone -> pipeline -> live events, until told to stop.

One loop owns the device: it opens the microphone (or array), pushes every block through the
same `Pipeline` as `nightear detect`, stores an event in SQLite and then writes its line when it
opens (the live alert) and when it closes, and reopens a failing device with backoff instead
of dying, pinging systemd's watchdog and saying what it does (sd_notify STATUS=, metrics)
while it waits, so a microphone unplugged for minutes never gets the unit killed. SIGTERM and
SIGINT stop it cleanly: the open event is closed and written before exit; SIGHUP closes it the
same way, reloads config and model and listens on. One daemon per store (a lock); events a
killed run left open are closed at start-up, marked interrupted. Event times come from the
capture time of the audio, not from counting samples.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import sqlite3
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import TextIO

import msgspec
import numpy as np

from nightear.classifier import OnnxClassifier
from nightear.config import Settings
from nightear.decision import DroneEvent, EventChange, mismatch
from nightear.errors import AudioError, NightearError
from nightear.output import no_space
from nightear.pipeline import DetectorOutput, Pipeline, score_line
from nightear.sinks.clips import AudioHistory, ClipWriter, clip_name
from nightear.sinks.heartbeat import LowFrequencyMeter, heartbeat_message
from nightear.sinks.metrics import Counters, prometheus_text, sd_notify, write_atomically
from nightear.sinks.mqtt import EventForwarder
from nightear.sinks.store import EventStore, StoredBearing, StoredEvent
from nightear.sinks.store_opener import StoreOpener
from nightear.sources import CaptureTimeline, MicSource, rescan_devices

BACKOFF_SECONDS = (1.0, 2.0, 5.0, 10.0, 30.0)  # waits before reopening a failed device
PING_SECONDS = 1.0  # watchdog pings and status checks, far inside systemd's WatchdogSec
CHECKPOINT_SECONDS = 1.0  # an open event's row is brought up to date this often
Reload = Callable[[], tuple[Settings, OnnxClassifier]]


class Listener:
    """State of one listening run: what it has heard and how the device behaved."""

    def __init__(self, settings: Settings, classifier: OnnxClassifier, out: TextIO = sys.stdout,
                 scores: bool = False, duration_s: float | None = None,
                 log: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True),
                 config_folder: Path | None = None, reload: Reload | None = None):
        self.settings, self.classifier, self.out = settings, classifier, out
        self.node = settings.node or socket.gethostname()
        self.log = log
        self.opener = StoreOpener(settings.store.path, log) if settings.store.path and not scores else None
        self.store = self._open_store() if self.opener is not None else None
        self.clips = (ClipWriter(settings.clips, classifier.info.frontend, classifier.mel_basis)
                      if settings.clips.folder else None)
        self.history: AudioHistory | None = None
        self._event_id = ""
        self.scores, self.duration_s, self.reload = scores, duration_s, reload
        self.stop = threading.Event()
        self._terminating = self._reload_requested = False
        self.counters = Counters()
        self._last_metrics = self._last_ping = self._last_checkpoint = 0.0
        self._status, self._status_sent = "starting", ""
        self._timeline = CaptureTimeline()
        self._event_start = ""
        self._window_s = 0.0
        self.low_freq = LowFrequencyMeter(classifier.info.frontend.sample_rate)
        self.mqtt = self._forwarder(config_folder)
        if note := mismatch(settings.decision, classifier.info.metadata.get("decision"),
                             settings.model.hop_seconds):
            log(f"nightear: warning: {note}")

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

    def _open_store(self) -> EventStore | None:
        """Lock and open the store (None while its disk is full: the opener retries), and close
        what an earlier run (killed, power cut) left open."""
        assert self.opener is not None
        store = self.opener.open()
        if store is None:
            return None
        try:
            left_open = store.close_interrupted()
        except sqlite3.Error as exc:
            self.log(f"nightear: warning: {store.path}: events left open not closed ({exc})")
            left_open = []
        for event in left_open:
            self.log(f"nightear: event {event.id} from {event.start} was left open by a run that "
                     f"ended without closing it: closed at {event.end}, marked interrupted")
        return store

    def _retry_store(self) -> None:
        """While the store's disk is full: try it again when due (the opener keeps the time)."""
        if self.opener is not None and (self.store is None or self.opener.kept):
            self.store = self.opener.retry_logged()

    def _save(self, stored: StoredEvent, track: list[StoredBearing]) -> None:
        """Durable first: to the store, or kept by the opener while the store's disk is full."""
        if self.opener is not None:
            self.store = self.opener.save(stored, track)

    def install_signal_handlers(self) -> None:
        def terminate(*_: object) -> None:
            self._terminating = True
            self.stop.set()

        def hang_up(*_: object) -> None:
            self._reload_requested = True
            self.stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, terminate)
        signal.signal(signal.SIGHUP, hang_up)

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
        """Listen until stopped (or `duration_s` of audio); reopen the device when it fails,
        pinging the watchdog while it waits; reload on SIGHUP."""
        failures = 0
        try:
            while not self.stop.is_set() or self._take_reload():
                try:
                    self._listen_once()
                    failures = 0
                except AudioError as exc:
                    if self.stop.is_set() and not self._reload_requested:
                        return  # told to stop while the device failed: nothing to reopen
                    wait = BACKOFF_SECONDS[min(failures, len(BACKOFF_SECONDS) - 1)]
                    if failures == 0 and self.counters.audio_seconds == 0.0 \
                            and not os.environ.get("NOTIFY_SOCKET"):
                        raise  # at a terminal, never opened at all: a configuration problem
                    failures += 1
                    self._device_up(0)
                    self.counters.device_reopens += 1
                    self.log(f"nightear: warning: {exc}; reopening in {wait:.0f} s")
                    self._status = f"audio device lost ({exc}); reopening in {wait:.0f} s, attempt {failures}"
                    self._wait_pinging(wait)
                    if not self.stop.is_set():
                        rescan_devices()  # a microphone plugged back in has a new PortAudio index
        finally:
            if self.opener is not None and self.opener.lock is not None:
                self.opener.lock.release()

    def _wait_pinging(self, seconds: float) -> None:
        """Wait for the device without going silent: the unit is alive and retrying."""
        deadline = time.monotonic() + seconds
        while not self.stop.is_set() and time.monotonic() < deadline:
            self._ping()
            self._write_metrics_now_and_then()
            self.stop.wait(min(PING_SECONDS, max(0.0, deadline - time.monotonic())))

    def _take_reload(self) -> bool:
        """After SIGHUP: read config and model again (a bad one keeps the running ones)."""
        if not self._reload_requested or self._terminating:
            return False
        self._reload_requested = False
        self.stop.clear()
        if self.reload is None:
            return True
        try:
            settings, classifier = self.reload()
        except NightearError as exc:
            self.log(f"nightear: warning: SIGHUP: not reloaded, listening on as before ({exc})")
            return True
        if settings.store.path != self.settings.store.path or settings.mqtt != self.settings.mqtt:
            self.log("nightear: warning: SIGHUP: store and mqtt changes take effect at a restart")
            settings = msgspec.structs.replace(settings, store=self.settings.store, mqtt=self.settings.mqtt)
        self.settings, self.classifier = settings, classifier
        self.node = settings.node or socket.gethostname()
        self.clips = (ClipWriter(settings.clips, classifier.info.frontend, classifier.mel_basis)
                      if settings.clips.folder else None)
        self.log(f"nightear: SIGHUP: reloaded config and model ({classifier.info.name} "
                 f"{classifier.info.version})")
        return True

    def _listen_once(self) -> None:
        s = self.settings
        source = MicSource(s.audio, s.capture_channels)
        pipeline = Pipeline(self.classifier, s.decision, source.sample_rate, source.channels,
                            s.array, s.model.hop_seconds)
        self._timeline, pushed_s = CaptureTimeline(), 0.0
        self._window_s = pipeline.detector.window_seconds
        if self.clips is not None:
            self.history = AudioHistory(s.clips.preroll_seconds + s.clips.max_seconds + 5.0,
                                        pipeline.sample_rate)
        array = f", array {s.geometry.name}" if s.geometry is not None else ""
        listening = (f"listening on {source.device_info['name']!r} "
                     f"({source.channels} ch, {source.sample_rate} Hz{array})")
        self.log(f"nightear: {listening}")
        try:
            for block, captured in source.blocks(self.stop):
                if not len(block):  # no audio for half a second: still alive, say so
                    self._ping()
                    continue
                self._status = listening
                self._device_up(1)
                self._timeline.add(pushed_s, captured)
                pushed_s += len(block) / source.sample_rate
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
                    self._emit_event(change)
                self._checkpoint(pipeline)
                if self.duration_s is not None and self.counters.audio_seconds >= self.duration_s - 1e-9:
                    self.stop.set()
        finally:
            self.log(f"nightear: stopped after {self.counters.audio_seconds:.1f} s of audio, "
                     f"{self.counters.events} events")
            for change in pipeline.finish().changes:
                self._emit_event(change)
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
        if output.nonfinite_samples:
            if not c.nonfinite_samples:  # the first time; the metric counts them all
                self.log(f"nightear: warning: the audio device delivered {output.nonfinite_samples} "
                         "NaN or inf samples: scored as silence, counted in "
                         "nightear_nonfinite_samples_total")
            c.nonfinite_samples += output.nonfinite_samples
        c.input_overflows, c.dropped_frames = source.overflows, source.ring.dropped_frames
        self._retry_store()
        self._ping()
        self._write_metrics_now_and_then()

    def _ping(self) -> None:
        """Tell systemd the loop is alive (READY the first time), and its state when it changed."""
        now = time.monotonic()
        if now - self._last_ping >= PING_SECONDS:
            sent = sd_notify("READY=1\nWATCHDOG=1" if not self._last_ping else "WATCHDOG=1")
            if not sent and not self._last_ping and os.environ.get("NOTIFY_SOCKET"):
                self.log(f"nightear: warning: NOTIFY_SOCKET {os.environ['NOTIFY_SOCKET']} does not take "
                         "systemd notifications: listening on without the watchdog")
            self._last_ping = now
        if self._status != self._status_sent:
            sd_notify(f"STATUS={self._status}")
            self._status_sent = self._status

    def _device_up(self, up: int) -> None:
        """A device lost or back is written to the metrics at once, not an interval later: a
        reopened device may deliver a burst and fall silent again within one interval."""
        if self.counters.device_up != up:
            self.counters.device_up = up
            self._last_metrics = -math.inf

    def _write_metrics_now_and_then(self) -> None:
        now = time.monotonic()
        if now - self._last_metrics >= self.settings.metrics.interval_seconds:
            self._write_metrics()
            self._last_metrics = now

    def _checkpoint(self, pipeline: Pipeline) -> None:
        """Bring the open event's row up to date, so a run killed mid-event leaves it closable
        at its last stored window."""
        now = time.monotonic()
        if self.opener is None or now - self._last_checkpoint < CHECKPOINT_SECONDS:
            return
        event = pipeline.detector.tracker.current()
        if event is None:
            return
        self._last_checkpoint = now
        self._save(*self._stored(event, "open"))

    def _write_clip(self, event: StoredEvent, start_s: float, end_s: float) -> str | None:
        """The event's audio with pre-roll; a disk problem is reported, detection goes on."""
        if self.clips is None or self.history is None:
            return None
        c, rate = self.settings.clips, self.history.sample_rate
        first = round((start_s - c.preroll_seconds) * rate)
        last = min(round(end_s * rate), first + round((c.preroll_seconds + c.max_seconds) * rate))
        name = clip_name(event.start, event.id)
        try:
            wav, _ = self.clips.write(name, self.history.span(first, last))
        except OSError as exc:
            why = no_space(self.clips.folder, exc) or exc.strerror or exc
            self.log(f"nightear: warning: clip {name} not written ({why})")
            return None
        return str(wav)

    def _write_metrics(self) -> None:
        """Counters to the textfile; a disk problem is reported, detection goes on."""
        if not self.settings.metrics.path:
            return
        try:
            write_atomically(Path(self.settings.metrics.path), prometheus_text(self.counters, self.node))
        except OSError as exc:
            why = no_space(self.settings.metrics.path, exc) or exc.strerror or exc
            self.log(f"nightear: warning: metrics not written to {self.settings.metrics.path} ({why})")

    def _utc(self, stream_s: float) -> str:
        return self._timeline.utc(stream_s).isoformat(timespec="milliseconds")

    def _stored(self, e: DroneEvent, state: str) -> tuple[StoredEvent, list[StoredBearing]]:
        """The event as the store keeps it, its times those at which its audio was captured."""
        info = self.classifier.info
        stored = StoredEvent(
            id=self._event_id, node=self.node, state=state, start=self._event_start,
            end=self._utc(e.end_s),
            peak_confidence=round(e.peak_confidence, 4), mean_confidence=round(e.mean_confidence, 4),
            windows=e.windows, model=f"{info.name}-{info.version}", model_sha256=info.sha256,
            bearing_deg=e.bearing_deg, bearing_spread_deg=e.bearing_spread_deg,
            elevation_deg=e.elevation_deg, bearing_mirror_deg=e.bearing_mirror_deg,
        )
        # a track point is the event's captured start plus its offset into the event: distinct
        # times (the store's key) even from a device that delivers faster than real time
        start = datetime.fromisoformat(self._event_start)
        track = [StoredBearing((start + timedelta(seconds=p.t_s - e.start_s)).isoformat(
            timespec="milliseconds"), p.bearing_deg, p.elevation_deg, p.coherence, round(p.p, 4))
            for p in e.track]
        return stored, track

    def _emit_event(self, change: EventChange) -> None:
        """Store the event (durable first), then print it."""
        if self.scores:
            return
        e = change.event
        if change.kind == "open":
            # from the end of its first window: a window that straddles a pause in the audio
            # (or audio the ring dropped) then starts with the drone, not before the pause
            window = timedelta(seconds=self._window_s)
            start = self._timeline.utc(e.start_s + self._window_s) - window
            self._event_id = str(uuid.uuid4())
            self._event_start = start.isoformat(timespec="milliseconds")
        stored, track = self._stored(e, "open" if change.kind == "open" else "closed")
        if change.kind == "close":
            stored = replace(stored, clip=self._write_clip(stored, e.start_s, e.end_s))
        self._save(stored, track)
        if self.store is not None and self.mqtt is not None:
            self.mqtt.wake()
        line = {k: v for k, v in asdict(stored).items() if v is not None or not k.startswith(
            ("bearing", "elevation"))}
        self._emit({"event": change.kind, **line, "start_s": round(e.start_s, 3),
                    "end_s": round(e.end_s, 3)})

    def _emit(self, obj: dict[str, object]) -> None:
        self.out.write(json.dumps(obj) + "\n")
        self.out.flush()
