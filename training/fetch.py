"""`nightear fetch-data DIR` (or `python -m nightear_training fetch-data DIR`): the public
recordings, laid out as `../shared/data` holds them, for anyone without that folder.

Each source is a public GitHub repository at a pinned commit. Its manifest (`sources/<name>.csv`,
the same file as `<name>/manifest.csv` in the shared data, whose sha256 datasets.md lists) names
every file, its label, kind and group, and the sha256 of the FLAC nightear trains on. Fetching
downloads each original WAV (resuming a partial download with an HTTP Range request), converts it
losslessly to 16-bit FLAC, and keeps it only when its sha256 is the manifest's: a changed
upstream file or a wrong origin stops with one line naming it. Files already in place with the
right sha256 are skipped, so an interrupted run goes on where it stopped. It needs only the
edge install (soundfile), not the `train` extra.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf

from nightear.output import no_space

RAW_URL = "https://raw.githubusercontent.com"  # {RAW_URL}/{repository}/{commit}/{path}
MANIFESTS = Path(__file__).resolve().parent / "sources"
TIMEOUT_SECONDS = 60.0
CHUNK_BYTES = 1 << 16


class FetchError(Exception):
    """A download or a check failed; the message names the URL or the file."""


@dataclass(frozen=True)
class Source:
    """One public data set: where its originals are, and where each lands."""

    name: str  # the folder under DIR, as in ../shared/data
    repository: str  # GitHub owner/name
    origin: Callable[[str], tuple[str, str]]  # manifest path -> (commit, path in the repository)
    manifest_file: Path | None = None  # None: sources/<name>.csv

    @property
    def manifest_path(self) -> Path:
        return self.manifest_file or MANIFESTS / f"{self.name}.csv"

    def manifest(self) -> list[dict[str, str]]:
        with open(self.manifest_path, newline="") as handle:
            return list(csv.DictReader(handle))


DRONE_AUDIO_COMMIT = "2bb4d52fecf5daee44755052f324d674f647dd9d"
SVANSTROM_COMMIT = "be21ce5b650505cb61bca8dc6bdbafe5ef9f85a6"
# Purdue's recordings moved between folders over its history; each file from the commit that held it
PURDUE_COMMITS = {"june": "0828238289ac9491aadef7486a94b129a88a5706",
                  "june-sorted": "fe7dd7bf6b23e482a9368e94b93222b6a974f492",
                  "sorted": "87a3aa71abc605226fe51e478b52b61f73f48554"}
PURDUE_ORIGINS = {
    "drone/P1_up_and_down": ("sorted", "0701A/unload/P1_up_and_down"),
    "drone/WSU_P2_LOADED_up_and_down": ("sorted", "0701A/load/WSU_P2_LOADED_up_and_down"),
    "drone/WSU_P2_UNLOADED_UP_AND_DOWN": ("sorted", "0701A/unload/WSU_P2_UNLOADED_UP_AND_DOWN"),
    "drone/LGgram_P2_loaded_swing": ("sorted", "0720B/load/LGgram_P2_loaded swing"),
    "drone/WSU_P2_LOADED_BACK_AND_FORTH": ("june-sorted",
                                           "JUNE_01_PHANTOMS/load/WSU_P2_LOADED_BACK_AND_FORTH"),
    "drone/WSU_P2_LOADED_BACK_AND_FORTH_2": ("june-sorted",
                                             "JUNE_01_PHANTOMS/load/WSU_P2_LOADED_BACK_AND_FORTH_2"),
    "drone/WSU_P2_UNLOADED_BACK_AND_FORTH": ("june-sorted",
                                             "JUNE_01_PHANTOMS/unload/WSU_P2_UNLOADED_BACK_AND_FORTH"),
    "drone/purdue_P2_unloaded_up_down": ("june-sorted", "JUNE_01_PHANTOMS/unload/purdue_P2_unloaded_up_down"),
    "drone/purrdue_P2_standing": ("june-sorted", "JUNE_01_PHANTOMS/unload/purrdue_P2_standing"),
    "drone/background_in_air_iris": ("sorted", "BACKGROUND/background_in_air_iris"),
    "drone/background_in_air_iris_2": ("sorted", "BACKGROUND/background_in_air_iris_2"),
    "background/background_06_02_11": ("sorted", "BACKGROUND/background_06_02_11"),
    "background/background_06_02_11_b": ("june", "JUNE_02_BACKGROUND/background_06_02_11.txt"),
    **{f"background/background_06_02_{n:02d}": ("sorted", f"BACKGROUND/background_06_02_{n:02d}")
       for n in (1, 2, 3, 4, 9, 10, 13, 14, 15, 16, 19, 20)},
}


def _purdue(path: str) -> tuple[str, str]:
    stem = path.removesuffix(".flac")
    if stem in PURDUE_ORIGINS:
        era, origin = PURDUE_ORIGINS[stem]
    else:  # the rest: the June folders, at the commit that added them
        era = "june"
        background = stem.startswith("background/") or "iris" in stem
        origin = f"{'JUNE_02_BACKGROUND' if background else 'JUNE_01_PHANTOMS'}/{stem.split('/', 1)[1]}"
    return PURDUE_COMMITS[era], f"soundData/{origin}.wav"


SOURCES = (
    Source("drone-audio-dataset", "saraalemadi/DroneAudioDataset",
           lambda path: (DRONE_AUDIO_COMMIT, f"Binary_Drone_Audio/{path.removesuffix('.flac')}.wav")),
    Source("svanstrom-outdoor", "DroneDetectionThesis/Drone-detection-dataset",
           lambda path: (SVANSTROM_COMMIT, f"Data/Audio/{Path(path).stem}.wav")),
    Source("purdue-outdoor", "seven-up-purdue/uav-audio-detection", _purdue),
)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, part: Path) -> bytes:
    """The body at `url`, resuming from what `part` already holds (HTTP Range); `part` keeps
    every byte received until the body is complete, so a broken connection loses nothing."""
    part.parent.mkdir(parents=True, exist_ok=True)
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
            resumed = response.status == 206
            with open(part, "ab" if resumed else "wb") as out:
                for block in iter(lambda: response.read(CHUNK_BYTES), b""):
                    out.write(block)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # the part already holds the whole body
            return part.read_bytes()
        raise FetchError(f"cannot download {url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise FetchError(f"cannot download {url} ({reason}): check the network, or run where "
                         "raw.githubusercontent.com can be reached") from None
    return part.read_bytes()


def _to_flac(wav: bytes) -> bytes:
    """The original's samples as 16-bit FLAC, as the shared data holds them (lossless)."""
    try:
        samples, rate = sf.read(io.BytesIO(wav), dtype="int16", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise ValueError(f"not readable audio ({exc})") from None
    out = io.BytesIO()
    sf.write(out, samples if samples.shape[1] > 1 else samples[:, 0], rate, format="FLAC",
             subtype="PCM_16")
    return out.getvalue()


def fetch_source(source: Source, root: Path, base_url: str = RAW_URL,
                 log: Callable[[str], None] = print) -> int:
    """Lay out one source under root/<name>; returns how many files it downloaded."""
    folder, downloads = root / source.name, root / ".downloads" / source.name
    rows = source.manifest()
    fetched = 0
    for row in _missing(folder, rows):
        commit, origin = source.origin(row["path"])
        url = f"{base_url}/{source.repository}/{commit}/{urllib.parse.quote(origin)}"
        part = downloads / f"{row['path']}.wav.part"
        try:
            flac = _to_flac(download(url, part))
        except ValueError as exc:
            part.unlink(missing_ok=True)
            raise FetchError(f"{url}: {exc}") from None
        got = hashlib.sha256(flac).hexdigest()
        if got != row["sha256"]:
            part.unlink(missing_ok=True)
            raise FetchError(f"{url}: its audio is not the manifest's {source.name}/{row['path']} "
                             f"(sha256 {got[:12]}..., expected {row['sha256'][:12]}...)")
        target = folder / row["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_bytes(flac)
        os.replace(tmp, target)
        part.unlink()
        fetched += 1
        if fetched % 250 == 0:
            log(f"{source.name}: {fetched} files")
    (folder / "manifest.csv").write_bytes(source.manifest_path.read_bytes())
    log(f"{source.name}: {len(rows)} files in {folder} ({fetched} downloaded now)")
    return fetched


def _missing(folder: Path, rows: list[dict[str, str]]) -> Iterator[dict[str, str]]:
    """Rows whose file is absent or not the manifest's (a run stopped halfway)."""
    for row in rows:
        path = folder / row["path"]
        if not path.is_file() or sha256_of(path) != row["sha256"]:
            yield row


def fetch_data(root: Path, names: list[str] | None = None, base_url: str = RAW_URL,
               log: Callable[[str], None] = print, sources: tuple[Source, ...] = SOURCES) -> None:
    """Every source (or those named) under `root`, as ../shared/data lays them out."""
    known = {s.name: s for s in sources}
    unknown = [n for n in names or [] if n not in known]
    if unknown:
        raise FetchError(f"unknown source {', '.join(unknown)}; known: {', '.join(known)}")
    _check_folder(root)
    for name in names or list(known):
        try:
            fetch_source(known[name], root, base_url, log)
        except OSError as exc:  # a full disk, a folder made read-only meanwhile
            where = Path(exc.filename) if exc.filename else root
            why = no_space(where, exc) or (exc.strerror or str(exc)).lower()
            raise FetchError(f"{where}: cannot write the recordings there ({why})") from None


def _check_folder(root: Path) -> None:
    """`root` is, or can become, a folder this user writes: said before anything is downloaded."""
    try:
        if root.exists() and not root.is_dir():
            raise FetchError(f"{root}: is a file, not a folder: give a folder for the recordings")
        root.mkdir(parents=True, exist_ok=True)
        probe = root / ".nightear-fetch-probe"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        why = (exc.strerror or str(exc)).lower()
        raise FetchError(f"{root}: cannot write the recordings there ({why})") from None
