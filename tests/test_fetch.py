"""`python -m nightear_training fetch-data`: against a real HTTP server on loopback that serves
originals the tests write (WAV, as the public repositories hold them), never the network."""

from __future__ import annotations

import csv
import hashlib
import io
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import replace
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from nightear_training.fetch import MANIFESTS, SOURCES, FetchError, Source, fetch_source
from tests.conftest import FIXTURES, REPO

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class RangeHandler(SimpleHTTPRequestHandler):
    """A static file server that honours `Range: bytes=N-` (206), as GitHub's raw host does."""

    ranges: list[str] = []

    def send_head(self):  # type: ignore[no-untyped-def]
        wanted = self.headers.get("Range")
        path = Path(self.translate_path(self.path))
        if not wanted or not path.is_file():
            return super().send_head()
        self.ranges.append(wanted)
        start = int(wanted.removeprefix("bytes=").rstrip("-"))
        body = path.read_bytes()[start:]
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {start}-{start + len(body) - 1}/{path.stat().st_size}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        return io.BytesIO(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def mirror(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """(base URL, folder it serves) of a file server on 127.0.0.1."""
    folder = tmp_path / "mirror"
    folder.mkdir()
    RangeHandler.ranges = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(RangeHandler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", folder
    server.shutdown()
    server.server_close()


def flac_sha256(samples: np.ndarray, rate: int) -> str:
    out = io.BytesIO()
    sf.write(out, samples, rate, format="FLAC", subtype="PCM_16")
    return hashlib.sha256(out.getvalue()).hexdigest()


def publish(folder: Path, repository: str, path: str, samples: np.ndarray, rate: int) -> Path:
    """Put a WAV where the mirror serves {repository}/{COMMIT}/{path}."""
    wav = folder / repository / COMMIT / path
    wav.parent.mkdir(parents=True, exist_ok=True)
    sf.write(wav, samples, rate, subtype="PCM_16", format="WAV")
    return wav


@pytest.fixture()
def upstream(mirror: tuple[str, Path], tmp_path: Path) -> tuple[str, Source, dict[str, np.ndarray], Path]:
    """A two-file public source on the mirror: a mono drone clip and a stereo scene."""
    base, folder = mirror
    mono, rate = sf.read(FIXTURES / "drone_bebop_16k.flac", dtype="int16")
    stereo = (np.random.default_rng(0).standard_normal((44100, 2)) * 3000).astype(np.int16)
    files = {"drone/pass one.flac": (mono, rate), "background/scene.flac": (stereo, 44100)}
    manifest = tmp_path / "test-source.csv"
    with open(manifest, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["path", "label", "kind", "group", "sample_rate", "frames", "sha256"])
        for path, (samples, r) in files.items():
            publish(folder, "acme/recordings", f"audio/{Path(path).stem}.wav", samples, r)
            writer.writerow([path, path.split("/")[0], "test", Path(path).stem, r, len(samples),
                             flac_sha256(samples, r)])
    source = Source("test-source", "acme/recordings", lambda p: (COMMIT, f"audio/{Path(p).stem}.wav"),
                    manifest_file=manifest)
    return base, source, {path: samples for path, (samples, _) in files.items()}, folder


def test_fetch_lays_out_flac_and_manifest_and_skips_what_is_there(upstream, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    base, source, originals, _ = upstream
    root = tmp_path / "data"
    assert fetch_source(source, root, base, log=lambda _: None) == 2
    for path, samples in originals.items():
        got, _ = sf.read(root / source.name / path, dtype="int16")
        assert sf.info(str(root / source.name / path)).format == "FLAC"
        np.testing.assert_array_equal(got, samples)  # lossless
    assert (root / source.name / "manifest.csv").read_bytes() == source.manifest_path.read_bytes()
    assert not list((root / ".downloads").rglob("*.part"))
    assert fetch_source(source, root, base, log=lambda _: None) == 0  # all in place: nothing fetched


def test_fetch_resumes_a_partial_download_with_a_range_request(upstream, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    base, source, originals, _ = upstream
    root = tmp_path / "data"
    wav = io.BytesIO()
    sf.write(wav, originals["background/scene.flac"], 44100, subtype="PCM_16", format="WAV")
    half = wav.getvalue()[: len(wav.getvalue()) // 2]
    part = root / ".downloads" / source.name / "background/scene.flac.wav.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(half)  # what an interrupted run left
    fetch_source(source, root, base, log=lambda _: None)
    assert RangeHandler.ranges == [f"bytes={len(half)}-"]
    got, _ = sf.read(root / source.name / "background/scene.flac", dtype="int16")
    np.testing.assert_array_equal(got, originals["background/scene.flac"])


def test_fetch_refuses_an_original_that_is_not_the_manifests(upstream, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    base, source, originals, folder = upstream
    changed = originals["drone/pass one.flac"].copy()
    changed[100] += 1  # one sample changed upstream
    publish(folder, "acme/recordings", "audio/pass one.wav", changed, 16000)
    with pytest.raises(FetchError, match=r"pass%20one\.wav: its audio is not the manifest's "
                                         r"test-source/drone/pass one\.flac \(sha256 "):
        fetch_source(source, tmp_path / "data", base, log=lambda _: None)
    assert not (tmp_path / "data" / source.name / "drone" / "pass one.flac").exists()


def test_offline_is_one_clear_line(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = subprocess.run([sys.executable, "-m", "nightear_training", "fetch-data", str(tmp_path / "d"),
                             "--source", "svanstrom-outdoor", "--base-url", f"http://127.0.0.1:{port}"],
                            capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith(
        f"nightear_training: error: cannot download http://127.0.0.1:{port}/DroneDetectionThesis/"
        "Drone-detection-dataset/be21ce5b650505cb61bca8dc6bdbafe5ef9f85a6/Data/Audio/BACKGROUND_001.wav (")
    assert len(result.stderr.splitlines()) == 1


def test_the_manifests_are_the_shared_datas(data_root: Path) -> None:
    for source in SOURCES:
        assert (MANIFESTS / f"{source.name}.csv").read_bytes() == \
            (data_root / source.name / "manifest.csv").read_bytes(), source.name


def test_real_sources_rebuild_the_shared_files_byte_for_byte(data_root: Path, mirror, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The originals' samples, served where each real source says they are, come out as the very
    files in ../shared/data (the manifest's sha256): the layout and the conversion are right."""
    base, folder = mirror
    for source in SOURCES:
        rows = source.manifest()[:2]
        manifest = tmp_path / f"{source.name}.csv"
        with open(manifest, "w", newline="") as out:
            writer = csv.DictWriter(out, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        for row in rows:
            samples, rate = sf.read(data_root / source.name / row["path"], dtype="int16")
            commit, origin = source.origin(row["path"])
            wav = folder / source.repository / commit / origin
            wav.parent.mkdir(parents=True, exist_ok=True)
            sf.write(wav, samples, rate, subtype="PCM_16", format="WAV")
        fetch_source(replace(source, manifest_file=manifest), tmp_path / "data", base, log=lambda _: None)
        for row in rows:
            fetched = tmp_path / "data" / source.name / row["path"]
            assert hashlib.sha256(fetched.read_bytes()).hexdigest() == row["sha256"]


# The edge install (`pip install .`) lacks the train extra: run with its packages unimportable.
WITHOUT_TRAIN_EXTRA = """
import runpy, sys
class TrainExtraMissing:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"torch", "sklearn", "librosa", "matplotlib", "onnx", "onnxscript", "scipy"}:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, TrainExtraMissing())
sys.argv = sys.argv[1:]
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""


def edge_install(*args: str, user: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*(user or []), sys.executable, "-c", WITHOUT_TRAIN_EXTRA, *args],
                          capture_output=True, text=True, cwd=REPO, timeout=120)


def test_fetch_data_is_a_nightear_command_that_runs_without_the_train_extra(
        upstream, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    base_url, source, _, _ = upstream
    out = tmp_path / "data"
    # the real sources are not on the loopback mirror: an unknown source proves the command ran
    # past its imports; the mirror's own source is fetched by the tests above through the module
    result = edge_install("nightear", "fetch-data", str(out), "--source", "nowhere", "--base-url", base_url)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("nightear: error: unknown source nowhere; known: drone-audio-dataset")
    module = edge_install("nightear_training", "fetch-data", str(out), "--source", "nowhere")
    assert module.returncode == 2 and "unknown source nowhere" in module.stderr, module.stderr
    train = edge_install("nightear_training", "build-default", "--out", str(tmp_path / "m"))
    assert train.returncode == 2 and "Traceback" not in train.stderr, train.stderr
    assert "nightear_training: error: build-default needs the 'train' extra (No module named " in train.stderr
    assert "pip install 'nightear[train]'" in train.stderr


def test_fetch_data_into_a_file_or_a_folder_it_cannot_write_is_one_line(tmp_path: Path) -> None:
    import os
    import tempfile

    a_file = tmp_path / "data.txt"
    a_file.write_text("notes\n")
    result = edge_install("nightear", "fetch-data", str(a_file))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr == f"nightear: error: {a_file}: is a file, not a folder: give a folder for the " \
                            "recordings\n"
    with tempfile.TemporaryDirectory() as folder:  # outside pytest's root-only temp folders
        os.chmod(folder, 0o755)
        locked = Path(folder) / "locked"
        locked.mkdir(mode=0o555)
        # root writes anywhere: try as nobody (setpriv is in util-linux)
        drop = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if os.geteuid() == 0 else []
        result = edge_install("nightear", "fetch-data", str(locked / "data"), user=drop)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert f"nightear: error: {locked / 'data'}: cannot write the recordings there (permission denied)" \
        in result.stderr
