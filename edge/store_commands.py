"""`nightear events`, `label` and `export-labelled`: the commands on a unit's event store.

Each names the store it opens; a file that is not a nightear store is described and left as it
was (`EventStore` recognises its own); listing and exporting open it read-only.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from nightear.config import load_settings
from nightear.detect import emit
from nightear.errors import ConfigError, not_regular
from nightear.output import no_space
from nightear.sinks.store import EventStore, StoredEvent


def store_path(args: argparse.Namespace) -> str:
    path = args.db or load_settings(args.config).store.path
    if not path:
        raise ConfigError("no event store: give --db FILE or a config with store.path")
    if Path(path).is_dir():
        raise ConfigError(f"{path}: is a folder, not an event store (give the store's file)")
    if fault := not_regular(path):
        raise ConfigError(f"{path}: {fault}, not an event store")
    if not Path(path).is_file():
        raise ConfigError(f"{path}: no such event store")
    return str(path)


def events(args: argparse.Namespace) -> int:
    path = store_path(args)
    store = EventStore(path, read_only=True)
    try:
        verdicts = store.verdicts()
        for event in store.since(args.since):
            if args.unjudged and (event.id in verdicts or event.state == "open"):
                continue
            _print_stored(store, event, verdicts.get(event.id, (None, None))[0], args.json)
    except sqlite3.DatabaseError as exc:  # a damaged page: say so, not a traceback
        raise ConfigError(f"{path}: cannot read the event store ({exc})") from None
    finally:
        store.close()
    return 0


def _print_stored(store: EventStore, event: StoredEvent, verdict: str | None, as_json: bool) -> None:
    if as_json:
        track = [asdict(b) for b in store.track(event.id)] if event.bearing_deg is not None else []
        emit({**asdict(event), "verdict": verdict, **({"track": track} if track else {})})
        return
    bearing = "" if event.bearing_deg is None else \
        f"  bearing {event.bearing_deg:5.1f} +-{event.bearing_spread_deg or 0.0:.0f}"
    state = "interrupted" if event.interrupted else event.state
    judged = f"  verdict {verdict}" if verdict else ""
    print(f"{event.start}  {event.end}  {state:6s}  peak {event.peak_confidence:.2f}  "
          f"mean {event.mean_confidence:.2f}{bearing}  {event.node}  {event.id}{judged}")


def label(args: argparse.Namespace) -> int:
    path = store_path(args)
    EventStore(path, read_only=True).close()  # a file that is no event store stays untouched
    store = EventStore(path)
    try:
        event = store.find(args.event)
        store.set_verdict(event.id, args.verdict, datetime.now(UTC).isoformat(timespec="seconds"))
    except sqlite3.DatabaseError as exc:
        raise ConfigError(f"{path}: cannot write the verdict ({no_space(path, exc) or exc})") from None
    finally:
        store.close()
    print(f"{event.start}  {event.node}  {event.id}  verdict {args.verdict}")
    return 0


def export_labelled(args: argparse.Namespace) -> int:
    from nightear.labels import export_labelled as copy_judged_clips

    path = store_path(args)
    folder = load_settings(args.config).clips.folder
    store = EventStore(path, read_only=True)
    try:
        done = copy_judged_clips(store, args.out, Path(folder) if folder else None, args.since)
    except sqlite3.DatabaseError as exc:
        raise ConfigError(f"{path}: cannot read the event store ({exc})") from None
    finally:
        store.close()
    for line in done.skipped:
        print(f"nightear: skipped {line}", file=sys.stderr)
    if not done.written:
        print(f"nightear: nothing exported: no judged event in {path} has its clip "
              "(`nightear label EVENT drone|not-drone` judges one)", file=sys.stderr)
        return 0
    counts = ", ".join(f"{n} {label}" for label, n in sorted(done.written.items()))
    print(f"nightear: exported {sum(done.written.values())} clips ({counts}) to {args.out / 'labels.csv'}",
          file=sys.stderr)
    return 0
