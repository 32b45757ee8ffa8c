"""Field evidence becomes training data: the clips of events an operator has judged (`nightear
label`), copied into a folder with the `labels.csv` that `python -m nightear_training
build-default --folder` and `evaluate --folder` read.

A drone an operator confirmed is a real drone at a real site through this unit's microphone, and
a false alarm is the hardest negative there is: what the model needs most and the shared data
lacks. Each unit's events go under a folder of its own, grouped by night, so that a grouped
split keeps one night's passes together (a drone flown twice in a night is one session).
Exporting again, from the same unit or another, merges into the same `labels.csv`.
"""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from nightear.config import NODE_PATTERN
from nightear.errors import ConfigError, not_regular
from nightear.output import no_space
from nightear.sinks import PRIVATE_FILE_MODE, PRIVATE_FOLDER_MODE
from nightear.sinks.clips import clip_name
from nightear.sinks.metrics import write_atomically
from nightear.sinks.store import EventStore, StoredEvent

LABEL_OF_VERDICT = {"drone": "drone", "not-drone": "background"}  # the training folder's labels
FIELDS = ("path", "label", "group", "event", "verdict_at")
NIGHT_STARTS_AT_NOON = timedelta(hours=12)  # one night, one group: noon to noon, local time


@dataclass
class Export:
    """What an export did: rows written by label, and judged events left out, with why."""

    written: dict[str, int] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)


def night_of(event: StoredEvent) -> str:
    """The date the event's night began, in this host's time zone (on the unit, the site's):
    events either side of midnight share it, wherever the site lies."""
    return (datetime.fromisoformat(event.start).astimezone() - NIGHT_STARTS_AT_NOON).date().isoformat()


def _read_rows(labels_csv: Path) -> tuple[list[str], dict[str, dict[str, str]]]:
    if not labels_csv.exists():
        return list(FIELDS), {}
    if fault := not_regular(labels_csv):
        raise ConfigError(f"{labels_csv}: {fault}, not a labels file to merge into")
    try:
        with labels_csv.open(newline="") as handle:
            reader = csv.DictReader(handle)
            rows = list(reader)
            columns = list(reader.fieldnames or [])
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ConfigError(f"{labels_csv}: cannot read it to merge into ({exc})") from None
    if "path" not in columns or "label" not in columns:
        raise ConfigError(f"{labels_csv}: not a labels file (needs columns path and label, has {columns})")
    return columns + [c for c in FIELDS if c not in columns], {row["path"]: row for row in rows}


def _copy(source: Path, target: Path) -> None:
    """Copy under a temporary name, then rename: a full disk leaves no half clip behind. The
    night's recordings stay as private as the unit keeps them (0640 in folders 0750)."""
    target.parent.mkdir(mode=PRIVATE_FOLDER_MODE, parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    try:
        shutil.copyfile(source, tmp)
        os.chmod(tmp, PRIVATE_FILE_MODE)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _own_clip(event: StoredEvent, clips_folder: Path | None) -> Path | str:
    """The event's clip where nightear wrote it, or why it is not copied. Only a file named as
    nightear names this event's clip, directly in the unit's clips folder (links resolved), is:
    a store someone else can write must not smuggle any other readable file into training data."""
    assert event.clip
    if clips_folder is None:
        return "no clips.folder configured: clips are copied only from the unit's clips folder "\
               "(give --config)"
    clip = Path(event.clip)
    expected = f"{clip_name(event.start, event.id)}.wav"
    if clip.name != expected:
        return f"its clip {clip} is not the name nightear gives this event's clip ({expected}): not copied"
    if os.path.realpath(clip) != os.path.join(os.path.realpath(clips_folder), expected):
        return f"its clip {clip} is not in the clips folder {clips_folder}: not copied"
    return clip


def export_labelled(store: EventStore, out: Path, clips_folder: Path | None,
                    since: datetime | None = None) -> Export:
    """Copy each judged event's clip (from `clips_folder` only) to `out/<node>/` and write
    `out/labels.csv` (merged with the rows already there). A clip exported before keeps its copy
    and takes the latest verdict, even once the unit's quota has deleted it; one never exported
    and gone is skipped and named."""
    verdicts = store.verdicts()
    labels_csv = out / "labels.csv"
    columns, rows = _read_rows(labels_csv)
    result = Export()
    for event in store.since(since):
        if event.id not in verdicts:
            continue
        verdict, at = verdicts[event.id]
        if not event.node or not re.fullmatch(NODE_PATTERN, event.node):  # it names a folder
            result.skipped.append(f"{event.id[:8]} ({verdict}): node {event.node!r} is no folder name")
            continue
        if event.state == "open":
            result.skipped.append(f"{event.id[:8]} ({verdict}): still open: its clip comes when it closes")
            continue
        if not event.clip:
            result.skipped.append(f"{event.id[:8]} ({verdict}): no clip was written (clips.folder "
                                  "unset, or a full disk)")
            continue
        clip = _own_clip(event, clips_folder)
        if isinstance(clip, str):
            result.skipped.append(f"{event.id[:8]} ({verdict}): {clip}")
            continue
        relpath = f"{event.node}/{clip.name}"
        if not (out / relpath).is_file():  # a clip never changes once written: copied once
            if not clip.is_file():
                result.skipped.append(f"{event.id[:8]} ({verdict}): {clip} is gone (the clips "
                                      "quota deletes the oldest)")
                continue
            try:
                _copy(clip, out / relpath)
            except OSError as exc:
                why = no_space(out, exc) or exc.strerror or exc
                raise ConfigError(f"{out / relpath}: cannot copy the clip ({why})") from None
        label = LABEL_OF_VERDICT[verdict]
        rows[relpath] = {**rows.get(relpath, {}), "path": relpath, "label": label,
                         "group": f"{event.node}/{night_of(event)}", "event": event.id, "verdict_at": at}
        result.written[label] = result.written.get(label, 0) + 1
    if result.written:
        write_labels(labels_csv, columns, rows)
    return result


def write_labels(labels_csv: Path, columns: Sequence[str], rows: dict[str, dict[str, str]]) -> None:
    """`labels.csv`, rows sorted by path, written whole or not at all."""
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, columns, restval="")
    writer.writeheader()
    writer.writerows(rows[path] for path in sorted(rows))
    try:
        write_atomically(labels_csv, text.getvalue())
    except OSError as exc:
        why = no_space(labels_csv.parent, exc) or exc.strerror or exc
        raise ConfigError(f"{labels_csv}: cannot write it ({why})") from None
