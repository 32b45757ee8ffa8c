"""`nightear listen` when its surroundings fail: no microphone at a terminal (said as check says
it, nothing created first), systemd's notify socket gone (listening goes on), and the store's
disk full at start (the events still go out, are kept, and reach the store once it opens)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

EXAMPLE = REPO / "examples" / "drone-pass.flac"


def test_listen_without_a_microphone_says_so_and_creates_nothing(tmp_path: Path) -> None:
    cards = Path("/proc/asound/cards")
    if cards.is_file() and "no soundcards" not in cards.read_text():
        pytest.skip("this machine has a sound card: PortAudio would find a capture device")
    unit = tmp_path / "unit"
    config = tmp_path / "unit.yaml"
    config.write_text(f"store:\n  path: {unit}/events.db\nclips:\n  folder: {unit}/clips\n"
                      f"metrics:\n  path: {unit}/metrics/nightear.prom\n")
    env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}  # at a terminal
    result = subprocess.run([sys.executable, "-m", "nightear", "listen", "--config", str(config)],
                            capture_output=True, text=True, cwd=REPO, timeout=120,
                            env={**env, "HOME": str(tmp_path)})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        "nightear: error: no capture device found: check that the microphone is plugged in and listed "
        "by `arecord -l`, and that this user is in the `audio` group"]
    assert not unit.exists()  # no store, lock, clips or metrics folder


def test_a_notify_socket_that_is_not_there_does_not_stop_the_daemon(fake_mic, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    env = {**fake_mic(EXAMPLE), "NOTIFY_SOCKET": str(tmp_path / "gone" / "notify")}
    result = subprocess.run([sys.executable, "-m", "nightear", "listen", "--duration", "16"],
                            capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert [json.loads(line)["event"] for line in result.stdout.splitlines()] == ["open", "close"]
    warned = [line for line in result.stderr.splitlines() if "NOTIFY_SOCKET" in line]
    assert len(warned) == 1 and "listening on without the watchdog" in warned[0]


def in_a_full_file_system(script: str, mount: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run `script` (sh) with a 256-KiB tmpfs at `mount`, filled to the last byte, in a mount
    namespace of its own: a real full disk, without touching the machine's."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is not installed")
    mount.mkdir()
    fill = (f"mount -t tmpfs -o size=256k tmpfs {mount} && "
            f"(dd if=/dev/zero of={mount}/fill bs=4k 2>/dev/null; true)")
    result = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                             f"{fill} && {script}"], capture_output=True, text=True, env=env, cwd=REPO,
                            timeout=180)
    if "mount" in result.stderr and ("Operation not permitted" in result.stderr
                                     or "Permission denied" in result.stderr):
        pytest.skip(f"this kernel does not let a user mount a tmpfs in a namespace: {result.stderr[:200]}")
    return result


def test_listen_with_the_store_on_a_full_disk_keeps_listening(fake_mic, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    env = fake_mic(EXAMPLE)
    full = tmp_path / "full"
    config = tmp_path / "unit.yaml"
    config.write_text(f"store:\n  path: {full}/events.db\nclips:\n  folder: {tmp_path}/clips\n")
    result = in_a_full_file_system(
        f"{sys.executable} -m nightear listen --config {config} --duration 16", full, env)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["event"] for line in lines] == ["open", "close"]  # the drone, heard and said
    assert f"{full}/events.db: event store not opened (no space left on {full}" in result.stderr
    assert "System error" not in result.stderr


def test_events_kept_while_the_disk_was_full_reach_the_store_once_it_opens(tmp_path: Path) -> None:
    full = tmp_path / "full"
    script = f"""
import sys
sys.path.insert(0, {str(REPO)!r})
from pathlib import Path
from nightear.sinks.store import EventStore
from nightear.sinks.store_opener import StoreOpener
from tests.test_store_identity import event
said = []
opener = StoreOpener({str(full / 'events.db')!r}, said.append)
assert opener.open() is None and 'no space left on' in said[0], said
kept = event()
opener.keep(kept, [])
assert opener.retry() is None  # not yet due
Path({str(full / 'fill')!r}).unlink()  # the operator frees the disk
opener._next_try = 0.0  # the retry falls due
store = opener.retry()
assert store is not None and [e.id for e in store.since()] == [kept.id], said
print('written', said[-1])
import subprocess
from nightear.sinks.store import StoredBearing
subprocess.run(['sh', '-c', 'dd if=/dev/zero of={str(full / 'fill')} bs=1k 2>/dev/null'])  # full again
later = event()
track = [StoredBearing(f'2026-12-02T00:{{i // 60:02d}}:{{i % 60:02d}}.000+00:00', 1.0, 2.0, 0.5, 0.9)
         for i in range(10)]
assert opener.save(later, track) is store and later.id in opener.kept, said  # kept, not lost
Path({str(full / 'fill')!r}).unlink()
opener._next_try = 0.0
opener.retry()
assert not opener.kept and later.id in [e.id for e in store.since()], said
print('kept while full, then stored:', said[-2])
"""
    result = in_a_full_file_system(f"{sys.executable} -c \"$SCRIPT\"", full, {**os.environ, "SCRIPT": script})
    assert result.returncode == 0, result.stderr
    assert "the events kept while it could not be written are stored" in result.stdout
    assert "kept while full, then stored: nightear: warning: event " in result.stdout
    assert "not stored yet, kept and retried (no space left on" in result.stdout


def test_export_and_label_on_a_full_disk_name_it(tmp_path: Path) -> None:
    import numpy as np
    import soundfile as sf

    from nightear.sinks.clips import clip_name
    from nightear.sinks.store import EventStore
    from tests.test_store_identity import START, event

    clips, full = tmp_path / "clips", tmp_path / "full"
    clips.mkdir()
    judged = event()
    clip = clips / f"{clip_name(START, judged.id)}.wav"
    sf.write(clip, np.zeros(64000, dtype=np.float32), 16000)  # 256 KB: more than the disk holds
    store = EventStore(tmp_path / "events.db")
    store.save(event(str(clip), judged.id))
    store.set_verdict(judged.id, "drone", START)
    store.close()
    config = tmp_path / "unit.yaml"
    config.write_text(f"store:\n  path: {tmp_path / 'events.db'}\nclips:\n  folder: {clips}\n")
    result = in_a_full_file_system(f"{sys.executable} -m nightear export-labelled {full}/out --config "
                                   f"{config}", full, dict(os.environ))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert f"cannot copy the clip (no space left on {full}" in result.stderr
