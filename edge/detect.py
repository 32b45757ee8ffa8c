"""`nightear detect`: recordings -> one JSON line per drone event (or per scored window).

Every file is checked before any is scored, so a bad one is reported at once and the good
ones are still processed; a file that ends badly still reports the event open at its end.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from typing import TextIO

from nightear.classifier import OnnxClassifier
from nightear.decision import DecisionConfig, DroneEvent
from nightear.errors import AudioError, NightearError
from nightear.geometry import ArraySettings
from nightear.output import OutputError
from nightear.pipeline import DetectorOutput, Pipeline, score_line
from nightear.sources import WavSource

PROGRESS_MIN_SECONDS = 60.0  # show a progress bar when there is at least this much audio


def detect_files(paths: Sequence[str], classifier: OnnxClassifier, decision: DecisionConfig,
                 array: ArraySettings, hop_seconds: float, scores: bool,
                 report: Callable[[str], None]) -> bool:
    """Print the events of each file in turn; `report` each bad file; False if there was one."""
    sources: list[WavSource | None] = []
    ok = True
    window_s = classifier.info.window_seconds
    for path in paths:
        try:
            source = WavSource(path, classifier.info.frontend.sample_rate)
            if source.duration_s < window_s:
                raise AudioError(f"{path}: too short to score: {source.duration_s:.3f} s of audio, "
                                 f"one window of the model is {window_s:.3f} s")
            sources.append(source)
        except NightearError as exc:
            report(str(exc))
            sources.append(None)
            ok = False
    progress = _Progress(sum(s.duration_s for s in sources if s), sys.stderr)
    out = _EventLines(progress)
    for source in sources:
        if source is None:
            continue
        if source.note is not None:
            progress.clear()
            print(f"nightear: note: {source.note}", file=sys.stderr, flush=True)
        if source.channels > 2 and not array.enabled:
            progress.clear()
            print(f"nightear: note: {source.path}: {source.channels} channels averaged to mono; "
                  "--array PRESET (or the config's array) would beamform them", file=sys.stderr,
                  flush=True)
        try:
            pipeline = Pipeline(classifier, decision, source.input_rate, source.channels, array,
                                hop_seconds)
            _detect_one(source, pipeline, scores, progress, out)
        except NightearError as exc:
            progress.clear()
            report(f"{source.path}: {exc}" if str(source.path) not in str(exc) else str(exc))
            ok = False
    progress.close()
    return ok and not out.failed


def _detect_one(source: WavSource, pipeline: Pipeline, scores: bool, progress: _Progress,
                out: _EventLines) -> None:
    """Events of one file; audio that ends badly (truncated, undecodable, non-finite) still
    closes the open event at its last good sample and reports it before the error."""
    name = str(source.path)
    try:
        for block in source.raw_blocks():
            _print_output(name, pipeline.push(block), pipeline, scores, out)
            progress.advance(len(block) / source.input_rate)
    finally:
        _print_output(name, pipeline.finish(), pipeline, scores, out)


def _print_output(name: str, output: DetectorOutput, pipeline: Pipeline, scores: bool,
                  out: _EventLines) -> None:
    lines = [{"file": name, **score_line(s)} for s in output.scores] if scores else [
        _event_json(name, c.event, pipeline) for c in output.changes if c.kind == "close"]
    for line in lines:
        out.write(line)


def _event_json(name: str, event: DroneEvent, pipeline: Pipeline) -> dict[str, object]:
    info = pipeline.detector.classifier.info
    line: dict[str, object] = {
        "file": name, "start_s": round(event.start_s, 3), "end_s": round(event.end_s, 3),
        "peak_confidence": round(event.peak_confidence, 4),
        "mean_confidence": round(event.mean_confidence, 4), "windows": event.windows,
        "model": f"{info.name}-{info.version}",
    }
    if event.bearing_deg is not None:
        line.update(bearing_deg=event.bearing_deg, bearing_spread_deg=event.bearing_spread_deg)
        if event.bearing_mirror_deg is not None:
            line.update(bearing_mirror_deg=event.bearing_mirror_deg)
        else:
            line.update(elevation_deg=event.elevation_deg)
    return line


def emit(obj: dict[str, object]) -> None:
    """One JSON line on stdout, flushed: a reader piping events sees each at once."""
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


class _EventLines:
    """Event lines to stdout; when stdout fails (a full disk), one error line and then every
    line on stderr instead, so no event found vanishes unseen."""

    def __init__(self, progress: _Progress):
        self.progress = progress
        self.failed = False

    def write(self, line: dict[str, object]) -> None:
        self.progress.clear()  # an event line never starts after the bar
        if not self.failed:
            try:
                emit(line)
                return
            except OutputError as exc:
                self.failed = True
                print(f"nightear: error: {exc}; the events found follow here on stderr", file=sys.stderr)
        print(json.dumps(line), file=sys.stderr, flush=True)


class _Progress:
    """A one-line progress bar on a terminal's stderr, only when the work is long."""

    def __init__(self, total_s: float, stream: TextIO):
        self.total_s = total_s
        self.done_s = 0.0
        self.stream = stream
        self.enabled = stream.isatty() and total_s >= PROGRESS_MIN_SECONDS
        self._last_draw = 0.0

    def advance(self, seconds: float) -> None:
        self.done_s += seconds
        now = time.monotonic()
        if self.enabled and now - self._last_draw > 0.2:
            self._last_draw = now
            frac = min(1.0, self.done_s / self.total_s)
            bar = "#" * int(frac * 30)
            self.stream.write(f"\r[{bar:<30}] {frac:6.1%} of {self.total_s / 60:.1f} min audio")
            self.stream.flush()

    def clear(self) -> None:
        """Wipe the bar off its line (drawn again at the next advance), before other output."""
        if self.enabled and self._last_draw:
            self.stream.write("\r" + " " * 60 + "\r")
            self.stream.flush()
            self._last_draw = 0.0

    def close(self) -> None:
        self.clear()
