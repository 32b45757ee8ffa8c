"""What leaves the post: its events and its position fixes as CSV or JSON lines (for notebooks
and reports), and the clips the operators judged as a training folder.

The events' columns `unit_lat_deg`/`unit_lon_deg` are where the unit that heard it stands;
where the drone was is a fix, exported on its own (`--export-fixes`). The training folder has
the layout `nightear export-labelled` writes on a unit (`<node>/<clip>`, a `labels.csv` with
path, label, group, event, verdict_at; one group per unit and night), so `build-default
--folder` reads the post's verdicts as it reads a unit's.
"""

from __future__ import annotations

import csv
import json
from datetime import datetime
from pathlib import Path
from typing import TextIO

import msgspec

from nightear.errors import ConfigError
from nightear.fleet.store import EXPORT_COLUMNS, FIX_COLUMNS, FleetStore
from nightear.labels import LABEL_OF_VERDICT, NIGHT_STARTS_AT_NOON, Export, _read_rows, write_labels
from nightear.sinks import PRIVATE_FILE_MODE, PRIVATE_FOLDER_MODE
from nightear.sinks.clips import clip_name


def export_events(store: FleetStore, fmt: str, out: TextIO, since: datetime | None = None) -> int:
    """The fleet's events as CSV (one row each, no track) or JSON lines (with the track).
    Returns how many."""
    count = 0
    writer = csv.DictWriter(out, EXPORT_COLUMNS) if fmt == "csv" else None
    if writer is not None:
        writer.writeheader()
    for event, received in store.events(since):
        row = msgspec.structs.asdict(event)
        position = row.pop("position")
        row.update(received=received, **({f"unit_{k}": v for k, v in msgspec.structs.asdict(
            position).items()} if position else {}))
        if writer is not None:
            writer.writerow({k: row.get(k) for k in EXPORT_COLUMNS})
        else:
            row["track"] = [msgspec.structs.asdict(p) for p in event.track]
            out.write(json.dumps(row) + "\n")
        count += 1
    return count


def export_fixes(store: FleetStore, fmt: str, out: TextIO, since: datetime | None = None) -> int:
    """The stored position fixes: where the drones were, with their 95% ellipse (CSV), and
    their tracks (JSON lines). Returns how many."""
    fixes = store.fixes(since)
    if fmt == "csv":
        writer = csv.DictWriter(out, FIX_COLUMNS)
        writer.writeheader()
        for fix in fixes:
            writer.writerow({k: " ".join(fix[k]) if k in ("units", "events") else fix.get(k)
                             for k in FIX_COLUMNS})
    else:
        for fix in fixes:
            out.write(json.dumps(fix) + "\n")
    return len(fixes)


def night_of(start: str) -> str:
    """The date the event's night began, in this host's time zone (see nightear.labels)."""
    return (datetime.fromisoformat(start).astimezone() - NIGHT_STARTS_AT_NOON).date().isoformat()


def _write_clip(target: Path, flac: bytes) -> None:
    target.parent.mkdir(mode=PRIVATE_FOLDER_MODE, parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    try:
        tmp.write_bytes(flac)
        tmp.chmod(PRIVATE_FILE_MODE)
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)


def export_judged(store: FleetStore, out: Path) -> Export:
    """Each judged event's clip to `out/<node>/<clip>.flac`, and `out/labels.csv` merged with
    the rows already there."""
    labels_csv = out / "labels.csv"
    columns, rows = _read_rows(labels_csv)
    result = Export()
    for event_id, (verdict, _, at) in sorted(store.verdicts().items()):
        found = store.event(event_id)
        flac = store.clip(event_id)
        if found is None or flac is None:
            result.skipped.append(f"{event_id[:8]} ({verdict}): its clip has not reached the post")
            continue
        event, _ = found
        relpath = f"{event.node}/{clip_name(event.start, event.id)}.flac"
        try:
            if not (out / relpath).is_file():
                _write_clip(out / relpath, flac)
        except OSError as exc:
            raise ConfigError(f"{out / relpath}: cannot write the clip ({exc.strerror or exc})") from None
        label = LABEL_OF_VERDICT[verdict]
        rows[relpath] = {**rows.get(relpath, {}), "path": relpath, "label": label,
                         "group": f"{event.node}/{night_of(event.start)}", "event": event.id,
                         "verdict_at": at}
        result.written[label] = result.written.get(label, 0) + 1
    if result.written:
        write_labels(labels_csv, columns, rows)
    return result
