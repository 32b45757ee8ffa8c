"""Data sets as manifests, and the grouped split that keeps each recording on one side.

A random split over 1-s clips leaks: five clips cut from one recording sit in train and test
and the test score measures memory, not hearing. Here every clip's split follows from its
recording alone (rules in `split_of`), so the split is stable when data is added.
"""

from __future__ import annotations

import csv
import hashlib
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

DATA_ENV = "NIGHTEAR_DATA"
SPLITS = ("train", "val", "test")
SPLIT_SALT = "nightear-split-v1"
ESC50_FOLD_SPLIT = {"1": "train", "2": "train", "3": "train", "4": "val", "5": "test"}
TRAIN_FRACTION, VAL_FRACTION = 0.70, 0.15  # by group hash / by position; the rest is test
DRONE_AUDIO_DATASET = "drone-audio-dataset"
OUTDOOR_SOURCES = ("svanstrom-outdoor", "purdue-outdoor", "gunhoo-outdoor")
AMBIENCE = "ambience"  # long outdoor ambience and frog choruses: negatives, beds, false alarms
ALL_SOURCES = (DRONE_AUDIO_DATASET, *OUTDOOR_SOURCES, AMBIENCE)
EXCLUDED = "excluded"  # the split of clips whose label cannot be trusted
# Clips whose drone may be inaudible (the data's README: "check before trusting them as
# positives"): kept out of training and of every metric, and scored on their own.
# gunhoo-outdoor's 1-m clips are the rotors' downwash on the microphone, no sound of the field.
UNCERTAIN_PREFIXES = {"purdue-outdoor": ("drone/background_in_air_iris", "drone/in_air_iris_far_away"),
                      "gunhoo-outdoor": ("drone/1m/",)}
# Drone clips that hold no sound at all (every sample 0, or +-1 of 16 bits): as positives they
# taught that silence or a background alone is a drone, and as recordings to hear they could only
# be missed. Kept out like the uncertain ones; tests/test_data_quality.py checks that these are
# silent and that no other drone clip is.
SILENT_DRONE_CLIPS = {"drone-audio-dataset": ("yes_drone/mixed_membo_17-membo_003_.flac",
                                              "yes_drone/mixed_membo_17-membo_004_.flac"),
                      "gunhoo-outdoor": ("drone/30m/30mtest-second-30m-53_5_front5seconds.flac",
                                         "drone/40m/40mtest-second-40m-24sec.flac")}


@dataclass(frozen=True)
class Clip:
    """One manifest row, with the split it belongs to."""

    path: Path
    relpath: str  # path inside its data set, as the manifest gives it
    label: str
    kind: str
    group: str
    source: str
    sha256: str
    split: str

    @property
    def is_drone(self) -> bool:
        return self.label == "drone"

    @property
    def drone(self) -> str:
        """Which drone a positive is (make and site): what a leave-one-drone-out holds out."""
        if self.source == DRONE_AUDIO_DATASET:
            return "mambo" if ":membo" in self.kind else "bebop"
        if self.source == "purdue-outdoor":
            return "iris" if "iris" in self.kind else "phantom"
        return self.source.removesuffix("-outdoor")

    @property
    def pool(self) -> str:
        """Which kind of background a negative is, for drawing negatives in balance."""
        if self.source == AMBIENCE:  # animals apart: toads' buzzing calls and crows score like a hum
            return "animals" if self.kind.startswith(("ambience:animals:", "ambience:frog:")) else "ambience"
        if "helicopter" in self.kind:
            return "helicopter"
        if self.kind.startswith("esc50:"):
            return "esc50"
        if self.kind.startswith("noise:"):
            return "noise"
        return "outdoor"


def data_root() -> Path:
    """Where the shared recordings are: $NIGHTEAR_DATA, else ../shared/data beside the repo."""
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV])
    repo = Path(__file__).resolve().parent.parent
    for candidate in (repo.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"):
        if candidate.is_dir():
            return candidate
    return repo.parent / "shared" / "data"


def hash_fraction(text: str) -> float:
    digest = hashlib.sha256(f"{SPLIT_SALT}:{text}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _split_by_fraction(fraction: float) -> str:
    if fraction < TRAIN_FRACTION:
        return "train"
    return "val" if fraction < TRAIN_FRACTION + VAL_FRACTION else "test"


def split_of(source: str, kind: str, group: str, position: float) -> str:
    """The split of a clip, from its recording only.

    - ESC-50 clips: by the data set's own fold (1-3 train, 4 val, 5 test).
    - `noise:*` clips (a few long recordings cut into pieces): by position inside the
      recording (first 70% train, next 15% val, last 15% test), so neighbours stay together.
    - everything else: by a hash of the source and group (a recording session or chunk).
    """
    if kind.startswith("esc50:"):
        fold = group.removeprefix("esc50:").split("-", 1)[0]
        return ESC50_FOLD_SPLIT[fold]
    if kind.startswith("noise:"):
        return _split_by_fraction(position)
    return _split_by_fraction(hash_fraction(f"{source}/{group}"))


def stratified_group_splits(groups_by_label: dict[str, list[str]], salt: str) -> dict[str, str]:
    """For a source with few recording sessions: within each label, groups in hash order take
    positions (i + 0.5) / n, so a label with three or more groups has one in every split."""
    splits: dict[str, str] = {}
    for label, groups in groups_by_label.items():
        ordered = sorted(set(groups), key=lambda g: hash_fraction(f"{salt}/{label}/{g}"))
        for i, group in enumerate(ordered):
            splits[group] = _split_by_fraction((i + 0.5) / len(ordered))
    return splits


def _is_uncertain(source: str, relpath: str) -> bool:
    return (relpath.startswith(UNCERTAIN_PREFIXES.get(source, ()))
            or relpath in SILENT_DRONE_CLIPS.get(source, ()))


def load_manifest(source_dir: Path) -> list[Clip]:
    """Read `<source_dir>/manifest.csv` into clips with their split.

    The DroneAudioDataset follows `split_of`; the outdoor sets and the ambience, with a
    handful of sessions (or one file a group) each, are split by `stratified_group_splits` so
    each split holds drones and background.
    """
    manifest = source_dir / "manifest.csv"
    with manifest.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    source = source_dir.name
    # a row of no frames is no recording (gunhoo-outdoor lists one empty file)
    rows = [dict(r, uncertain=_is_uncertain(source, r["path"])) for r in rows if r.get("frames") != "0"]
    by_label: dict[str, list[str]] = {}
    for row in rows:
        if not row["uncertain"]:
            by_label.setdefault(row["label"], []).append(row["group"])
    outdoor = stratified_group_splits(by_label, source) if source != DRONE_AUDIO_DATASET else {}
    per_group: dict[str, list[str]] = {}
    for row in rows:
        per_group.setdefault(row["group"], []).append(row["path"])
    for paths in per_group.values():
        paths.sort()
    clips = []
    for row in rows:
        members = per_group[row["group"]]
        position = members.index(row["path"]) / len(members)
        if row["uncertain"]:
            split = EXCLUDED
        elif outdoor:
            split = outdoor[row["group"]]
        else:
            split = split_of(source, row["kind"], row["group"], position)
        clips.append(Clip(
            path=source_dir / row["path"], relpath=row["path"], label=row["label"], kind=row["kind"],
            group=row["group"], source=source, sha256=row["sha256"], split=split,
        ))
    return clips


def load_clips(root: Path | None = None, sources: tuple[str, ...] = (DRONE_AUDIO_DATASET,)) -> list[Clip]:
    """All clips of the named data sets under `root` (default `data_root()`)."""
    root = root or data_root()
    if not root.is_dir():
        raise FileNotFoundError(
            f"no data at {root}: set {DATA_ENV} to the folder that holds {', '.join(sources)}"
        )
    clips: list[Clip] = []
    for name in sources:
        clips.extend(load_manifest(root / name))
    return clips


def split_manifest_text(clips: list[Clip]) -> str:
    """A canonical text of the split (one sorted line per clip): what the model's hash covers."""
    lines = sorted(f"{c.source}/{c.relpath},{c.label},{c.kind},{c.group},{c.split},{c.sha256}"
                   for c in clips)
    return "\n".join(lines) + "\n"


def manifest_sha256(clips: list[Clip]) -> str:
    return hashlib.sha256(split_manifest_text(clips).encode()).hexdigest()


def split_summary(clips: list[Clip]) -> dict[str, dict[str, object]]:
    """Per split: clip counts by label, group count and the sha256 of that split's lines."""
    summary: dict[str, dict[str, object]] = {}
    for split in SPLITS:
        members = [c for c in clips if c.split == split]
        summary[split] = {
            "clips": len(members),
            "by_label": dict(sorted(Counter(c.label for c in members).items())),
            "groups": len({(c.source, c.group) for c in members}),
            "sha256": manifest_sha256(members),
        }
    return summary


def load_folder(folder: Path, labels_csv: Path | None = None) -> list[Clip]:
    """New field recordings: a folder of audio files and a CSV (default `labels.csv` in it)
    with columns `path,label` and optionally `group` (default: the file's stem: one recording,
    one group) and `split` (default: a stratified split of the groups)."""
    labels_csv = labels_csv or folder / "labels.csv"
    with labels_csv.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    bad = [r.get("label") for r in rows if r.get("label") not in ("drone", "background")]
    if not rows or bad:
        raise ValueError(
            f"{labels_csv}: need rows `path,label` with label drone or background, got {bad[:3]}")
    for row in rows:
        row.setdefault("group", "")
        row["group"] = row["group"] or Path(row["path"]).stem
    by_label: dict[str, list[str]] = {}
    for row in rows:
        by_label.setdefault(row["label"], []).append(row["group"])
    splits = stratified_group_splits(by_label, folder.name)
    return [
        Clip(path=folder / row["path"], relpath=row["path"], label=row["label"],
             kind=f"{folder.name}:{row['label']}", group=row["group"], source=folder.name,
             sha256=hashlib.sha256((folder / row["path"]).read_bytes()).hexdigest(),
             split=row.get("split") or splits[row["group"]])
        for row in rows
    ]


def lab_test_clips(clips: Sequence[Clip]) -> list[Clip]:
    """DroneAudioDataset's grouped test split: the lab task's clips (1.0.0's figure)."""
    return [c for c in clips if c.source == DRONE_AUDIO_DATASET and c.split == "test"]
