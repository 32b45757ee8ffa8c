"""Health without a port: counters written atomically in Prometheus text format for
node_exporter's textfile collector, and systemd's notify protocol (READY, WATCHDOG).

The watchdog ping comes from the pipeline loop itself, so a stalled pipeline stops pinging and
systemd restarts the service.
"""

from __future__ import annotations

import os
import resource
import socket
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from nightear.sinks import PRIVATE_FILE_MODE, PRIVATE_FOLDER_MODE


@dataclass
class Counters:
    """What the daemon has done since it started."""

    started: float = field(default_factory=time.monotonic)
    audio_seconds: float = 0.0
    cpu_seconds: float = 0.0  # pipeline CPU time spent on that audio
    windows_scored: int = 0
    events: int = 0
    input_overflows: int = 0
    dropped_frames: int = 0
    device_reopens: int = 0
    device_up: int = 0  # 1 while audio flows, 0 while the device is lost and being reopened
    nonfinite_samples: int = 0  # NaN/inf samples from the device, scored as silence

    @property
    def real_time_factor(self) -> float:
        """Seconds of audio processed per second of pipeline CPU."""
        return self.audio_seconds / self.cpu_seconds if self.cpu_seconds else 0.0


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def label_value(text: str) -> str:
    """A label value as the exposition format wants it: backslash, quote and newline escaped."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def prometheus_text(c: Counters, node: str) -> str:
    label = f'{{node="{label_value(node)}"}}'
    rows = [
        ("nightear_audio_seconds_total", "counter", "Seconds of audio processed", c.audio_seconds),
        ("nightear_windows_scored_total", "counter", "Windows scored by the classifier",
         c.windows_scored),
        ("nightear_events_total", "counter", "Drone events opened", c.events),
        ("nightear_input_overflows_total", "counter", "PortAudio input overflows", c.input_overflows),
        ("nightear_dropped_frames_total", "counter", "Frames dropped: pipeline behind the ring",
         c.dropped_frames),
        ("nightear_device_reopens_total", "counter", "Audio device reopened after a failure",
         c.device_reopens),
        ("nightear_nonfinite_samples_total", "counter", "NaN or inf samples from the device, "
         "scored as silence", c.nonfinite_samples),
        ("nightear_device_up", "gauge", "1 while the audio device delivers, 0 while it is reopened",
         c.device_up),
        ("nightear_real_time_factor", "gauge", "Seconds of audio per second of pipeline CPU",
         round(c.real_time_factor, 1)),
        ("nightear_peak_rss_bytes", "gauge", "Peak resident memory", peak_rss_bytes()),
        ("nightear_uptime_seconds", "gauge", "Seconds since start",
         round(time.monotonic() - c.started, 1)),
    ]
    lines = []
    for name, kind, help_text, value in rows:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", f"{name}{label} {value}"]
    return "\n".join(lines) + "\n"


def write_atomically(path: Path, text: str) -> None:
    """Write to a temporary file beside `path`, then rename: readers never see half a file."""
    path.parent.mkdir(mode=PRIVATE_FOLDER_MODE, parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w") as out:
            out.write(text)
        os.chmod(tmp, PRIVATE_FILE_MODE)  # node_exporter reads it through the folder's group
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def sd_notify(message: str) -> bool:
    """Send `message` (READY=1, WATCHDOG=1, STATUS=...) to systemd; False outside systemd or
    when its socket does not take it (the caller says so once; detection never stops for it)."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(message.encode(), address)
    except OSError:  # a socket gone or never there: the daemon listens on regardless
        return False
    return True
