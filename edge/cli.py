"""The `nightear` command line: detect drones in recordings, listen live, list devices, describe
a model, list stored events, judge them and export the judged clips for training.

User errors (a bad file, config or model) print one line `nightear: error: ...` on stderr
and exit with status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TextIO, cast

import msgspec

from nightear import __version__, store_commands
from nightear.classifier import OnnxClassifier, default_model_path
from nightear.config import Settings, load_settings
from nightear.detect import detect_files
from nightear.errors import AudioError, ConfigError, NightearError, os_reason
from nightear.geometry import PRESETS
from nightear.output import GuardedStream
from nightear.sinks.store import VERDICTS, refuse_foreign

EXIT_USER_ERROR = 2
TEXT_METADATA = ("model_name", "model_version", "feature_version")  # text even when they look numeric


def _threshold(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"threshold must be a number in (0, 1), got {text!r}") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"threshold must be in (0, 1), got {text}")
    return value


def _duration(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"wants seconds, got {text!r}") from None
    if not math.isfinite(value) or value <= 0.0:
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds > 0, got {text}")
    return value


def _bench_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"wants seconds of audio, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds, got {text}")
    if value < 10.0:
        raise argparse.ArgumentTypeError(f"needs at least 10 s of audio to time bearings, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nightear", description="Acoustic drone detector.")
    parser.add_argument("--version", action="version", version=f"nightear {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    detect = sub.add_parser("detect", help="find drone events in WAV/FLAC recordings")
    detect.add_argument("paths", nargs="+", metavar="PATH", help="audio files (any rate/channels)")
    detect.add_argument("--model", help="ONNX model file (default: the shipped model)")
    detect.add_argument("--config", help="YAML config file")
    detect.add_argument("--threshold", type=_threshold, help="decision threshold in (0, 1)")
    detect.add_argument("--scores", action="store_true",
                        help="print one JSON line per scored window instead of events")
    detect.add_argument("--array", choices=sorted(PRESETS), metavar="PRESET",
                        help=f"the recording's microphone array ({', '.join(sorted(PRESETS))}): "
                             "beamform and report bearings (default: the config's array)")

    listen = sub.add_parser("listen", help="listen to the microphone and print events live")
    listen.add_argument("--config", help="YAML config file (audio device, model, decision)")
    listen.add_argument("--model", help="ONNX model file (default: config, else the shipped model)")
    listen.add_argument("--scores", action="store_true", help="print every scored window instead")
    listen.add_argument("--duration", type=_duration, metavar="S", help="stop after S seconds of audio")

    sub.add_parser("devices", help="list capture devices")

    bench = sub.add_parser("bench", help="CPU per stage, real-time factor, memory, start-up")
    bench.add_argument("--model", help="ONNX model file (default: the shipped model)")
    bench.add_argument("--config", help="YAML config file")
    bench.add_argument("--audio", help="a recording to use (default: noise with a rotor hum)")
    bench.add_argument("--seconds", type=_bench_seconds, default=120.0, help="seconds of audio (>= 10)")
    bench.add_argument("--array", choices=sorted(PRESETS), metavar="PRESET",
                       help="array to simulate (default: the config's array, else respeaker-4mic)")

    check = sub.add_parser("check", help="validate config, model and audio device, then exit")
    check.add_argument("--config", help="YAML config file")
    check.add_argument("--model", help="ONNX model file (default: config, else the shipped model)")

    events = sub.add_parser("events", help="list the events in the store")
    events.add_argument("--config", help="YAML config file (its store.path)")
    events.add_argument("--db", help="the SQLite event store (overrides the config)")
    events.add_argument("--since", type=_since, help="ISO time (UTC) or an age such as 30m, 12h, 2d")
    events.add_argument("--json", action="store_true", help="one JSON object per line")
    events.add_argument("--unjudged", action="store_true",
                        help="only closed events without a verdict yet (`nightear label`)")

    label = sub.add_parser("label", help="record an operator's verdict on a stored event")
    label.add_argument("event", type=_event_id, help="the event's id, or its first 8+ characters "
                       "(its clip's name ends with 8)")
    label.add_argument("verdict", choices=VERDICTS, help="drone: heard right; not-drone: a false alarm")
    label.add_argument("--config", help="YAML config file (its store.path)")
    label.add_argument("--db", help="the SQLite event store (overrides the config)")

    export = sub.add_parser("export-labelled",
                            help="copy the clips of judged events into a training folder with labels.csv")
    export.add_argument("out", type=Path, help="the folder (created; an existing labels.csv is merged)")
    export.add_argument("--config", help="YAML config file (its store.path)")
    export.add_argument("--db", help="the SQLite event store (overrides the config)")
    export.add_argument("--since", type=_since, help="ISO time (UTC) or an age such as 30m, 12h, 2d")

    from nightear.fleet.command import add_fleet_parser

    add_fleet_parser(sub, _since)

    fleet_bench = sub.add_parser("fleet-bench",
                                 help="load a broker and a nightear fleet with simulated units")
    fleet_bench.add_argument("--broker", default="127.0.0.1:1883", help="host:port of a running broker")
    fleet_bench.add_argument("--units", type=int, default=1000, help="simulated units")
    fleet_bench.add_argument("--seconds", type=float, default=60.0, help="seconds at the steady load")
    fleet_bench.add_argument("--flood", type=int, default=20_000, help="messages in the ceiling flood")
    fleet_bench.add_argument("--username", help="broker user (the broker's password file)")
    fleet_bench.add_argument("--password", help="that user's password")

    fetch = sub.add_parser("fetch-data", help="download the public training recordings into DIR, laid out "
                           "as ../shared/data (resumable; each file checked against its sha256)")
    fetch.add_argument("dir", type=Path, metavar="DIR")
    fetch.add_argument("--source", action="append", dest="sources", metavar="NAME",
                       help="only this source (repeatable): drone-audio-dataset, svanstrom-outdoor, "
                            "purdue-outdoor")
    fetch.add_argument("--base-url", help="a mirror laid out as raw.githubusercontent.com")

    info = sub.add_parser("info", help="print a model's metadata as JSON")
    info.add_argument("--model", help="ONNX model file (default: the shipped model)")
    info.add_argument("--config", help="YAML config file")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not isinstance(sys.stdout, GuardedStream):  # a full disk under stdout: one line, not a traceback
        sys.stdout = cast(TextIO, GuardedStream(sys.stdout))
    try:
        if args.command == "detect":
            return _detect(args)
        if args.command == "listen":
            return _listen(args)
        if args.command == "devices":
            return _devices()
        if args.command == "events":
            return store_commands.events(args)
        if args.command == "label":
            return store_commands.label(args)
        if args.command == "export-labelled":
            return store_commands.export_labelled(args)
        if args.command == "check":
            return _check(args)
        if args.command == "bench":
            return _bench(args)
        if args.command == "fleet":
            from nightear.fleet.command import fleet_command

            return fleet_command(args)
        if args.command == "fetch-data":
            return _fetch_data(args)
        if args.command == "fleet-bench":
            from nightear.fleet.bench import main as fleet_bench

            return fleet_bench(args.broker, args.units, args.seconds, args.flood, args.username,
                               args.password)
        return _info(args)
    except NightearError as exc:
        _error(str(exc))
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:  # a path the file system refuses (a name too long, a permission)
        _error(os_reason(exc))
        return EXIT_USER_ERROR


def _error(message: str) -> None:
    print(f"nightear: error: {message}", file=sys.stderr, flush=True)


def _load(args: argparse.Namespace) -> tuple[Settings, OnnxClassifier]:
    settings = load_settings(args.config)
    model_path = args.model or settings.model.path
    if model_path is None:
        model_path = default_model_path()
    elif args.model is None and args.config and not Path(model_path).is_absolute():
        model_path = Path(args.config).parent / model_path  # config paths are relative to it
    classifier = OnnxClassifier(model_path, settings.frontend, threads=settings.model.threads)
    return settings, classifier


def _info(args: argparse.Namespace) -> int:
    _, classifier = _load(args)
    info = classifier.info
    meta = {k: _metadata_value(k, v) for k, v in info.metadata.items() if k != "mel_basis"}
    meta.update(path=str(classifier.path), sha256=info.sha256, window_seconds=round(
        info.frontend.samples_for_frames(info.window_frames) / info.frontend.sample_rate, 4))
    print(json.dumps(meta, indent=2, sort_keys=True))
    return 0


def _metadata_value(key: str, text: str) -> object:
    """ONNX metadata is all text: numbers back to numbers and lists to lists, names kept as text."""
    if key in TEXT_METADATA or key.endswith("sha256"):
        return text
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, int | float | list) and not isinstance(value, bool) else text


def _listen(args: argparse.Namespace) -> int:
    from nightear.daemon import Listener

    settings, classifier = _load(args)
    # what needs no file of its own first: a foreign store or (at a terminal) no microphone is
    # said before a store, lock or clips folder exists; under systemd the daemon waits for one
    if settings.store.path and not args.scores:
        refuse_foreign(settings.store.path)
    if not os.environ.get("NOTIFY_SOCKET"):
        from nightear.preflight import probe_device

        probe_device(settings)
    listener = Listener(settings, classifier, scores=args.scores, duration_s=args.duration,
                        config_folder=Path(args.config).parent if args.config else None,
                        reload=lambda: _load(args))
    listener.install_signal_handlers()
    listener.run()
    return 0


def _since(text: str) -> datetime:
    units = {"m": 60, "h": 3600, "d": 86400}
    try:
        if text[-1:] in units and text[:-1].replace(".", "", 1).isdigit():
            return datetime.now(UTC) - timedelta(seconds=float(text[:-1]) * units[text[-1]])
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--since wants an ISO time or 30m/12h/2d, got {text!r}") from None
    except OverflowError:
        raise argparse.ArgumentTypeError(f"{text} reaches back before year 1") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _event_id(text: str) -> str:
    if len(text) < 8:
        raise argparse.ArgumentTypeError(f"give at least the first 8 characters of its id, got {text!r}")
    return text


def _fetch_data(args: argparse.Namespace) -> int:
    """The training package's fetch, which needs only the edge install (no `train` extra)."""
    try:
        from nightear_training.fetch import RAW_URL, FetchError, fetch_data
    except ImportError as exc:
        raise ConfigError(f"fetch-data needs nightear's training package ({exc}): install nightear "
                          "from its repository (pip install .)") from None
    try:
        fetch_data(args.dir, args.sources, args.base_url or RAW_URL)
    except FetchError as exc:
        raise ConfigError(str(exc)) from None
    print(f"NIGHTEAR_DATA={args.dir} now holds the public recordings")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from nightear import bench

    settings, classifier = _load(args)
    array = settings.array
    if args.array is not None or not array.enabled:
        array = msgspec.structs.replace(array, preset=args.array or "respeaker-4mic", mics=None,
                                        channels=None)
    rate, recording = classifier.info.frontend.sample_rate, Path(args.audio) if args.audio else None
    print(json.dumps(bench.run(classifier, lambda: bench.test_audio(rate, args.seconds, recording),
                               array), indent=2))
    return 0


def _check(args: argparse.Namespace) -> int:
    from nightear import preflight

    settings = load_settings(args.config)
    print(f"config: ok ({args.config or 'defaults'})")
    ok = preflight.check(settings, lambda: _load(args)[1], print, _error,
                         Path(args.config).parent if args.config else None)
    return 0 if ok else EXIT_USER_ERROR


def _devices() -> int:
    from nightear.sources import list_devices

    devices = list_devices()
    if not devices:
        from nightear.preflight import NO_CAPTURE_DEVICE

        raise AudioError(NO_CAPTURE_DEVICE)
    for device in devices:
        print(json.dumps(device))
    return 0


def _detect(args: argparse.Namespace) -> int:
    settings, classifier = _load(args)
    decision = settings.decision
    if args.threshold is not None:
        decision = msgspec.structs.replace(decision, threshold=args.threshold)
    array = settings.array
    if args.array is not None:
        array = msgspec.structs.replace(array, preset=args.array, mics=None, channels=None)
    ok = detect_files(args.paths, classifier, decision, array, settings.model.hop_seconds,
                      args.scores, _error)
    return 0 if ok else EXIT_USER_ERROR
