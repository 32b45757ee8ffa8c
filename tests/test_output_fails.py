"""Standard output on a full disk (`> /dev/full`): one line on stderr naming it, a non-zero exit,
and for `detect` every event found still said, on stderr, instead of vanishing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from nightear.sinks.store import EventStore
from tests.conftest import REPO
from tests.test_cli import DRONE, PIPELINE_THRESHOLD
from tests.test_store_identity import event


def to_full_disk(*args: str) -> subprocess.CompletedProcess[str]:
    with open("/dev/full", "w") as full:
        return subprocess.run([sys.executable, "-m", "nightear", *args], stdout=full,
                              stderr=subprocess.PIPE, text=True, cwd=REPO, timeout=300)


def test_detect_on_a_full_disk_says_so_and_its_events_reach_stderr() -> None:
    example = str(REPO / "examples" / "drone-pass.flac")
    result = to_full_disk("detect", "--threshold", PIPELINE_THRESHOLD, example, DRONE)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert lines[0] == ("nightear: error: standard output (/dev/full): no space left on device; "
                        "the events found follow here on stderr")
    found = [json.loads(line) for line in lines[1:]]
    assert [e["file"] for e in found] == [example, DRONE]
    assert "Exception ignored" not in result.stderr


def test_info_and_events_on_a_full_disk_say_so(tmp_path: Path) -> None:
    store = EventStore(tmp_path / "events.db")
    store.save(event())
    store.close()
    for args in (["info"], ["events", "--db", str(tmp_path / "events.db")],
                 ["events", "--json", "--db", str(tmp_path / "events.db")]):
        result = to_full_disk(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert result.stderr.splitlines() == [
            "nightear: error: standard output (/dev/full): no space left on device"], (args, result.stderr)
