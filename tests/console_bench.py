"""The console's figures, measured as an operator meets them: `python -m tests.console_bench`.

A real Mosquitto on loopback, two units' real forwarders, `nightear fleet` with its console,
and headless Chromium logged in. For each of `--alerts` drone passes: the alert-to-page
latency (the unit's publish time, `sent`, to the row appearing in the page, `Date.now()`, one
machine's clock), the broker hop alone (sent to the fleet's receipt), and the clip's delivery
(the closed event's alert at the post to its clip stored there). Then the page's weight as
Chromium counts it. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from nightear.fleet.store import parse_utc
from tests.broker import Broker
from tests.console_browser import OPERATOR, PASSWORD, browser, start_post, start_unit


def machine() -> str:
    """What ran it: CPU model, cores, Python."""
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor() or "?")
    return f"{platform.machine()} {model}, {os.cpu_count()} cores, Python {platform.python_version()}"


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"median": round(statistics.median(ordered), 1),
            "p95": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 1),
            "max": round(ordered[-1], 1), "n": len(ordered)}


def page_weight(driver: Any) -> dict[str, int]:
    """Bytes over the wire (transferSize) of the page and what it loaded, by kind."""
    entries = driver.execute_script(
        "return performance.getEntriesByType('navigation').concat(performance.getEntriesByType('resource'))"
        ".map(e => [e.name, e.transferSize, e.encodedBodySize])")
    weight: dict[str, int] = {}
    for name, transfer, body in entries:
        kind = ("clip" if name.endswith(".flac") else "spectrogram" if name.endswith(".jpg")
                else "stream" if name.endswith("/api/stream") else name.rsplit("/", 1)[-1] or "index")
        weight[kind] = weight.get(kind, 0) + int(transfer or body or 0)
    return weight


def run(alerts: int) -> dict[str, Any]:
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with tempfile.TemporaryDirectory(prefix="nightear-console-bench-") as tmp:
        folder = Path(tmp)
        broker = Broker(folder / "broker")
        fleet, console = start_post(broker, folder)
        units = [start_unit(broker, folder, node) for node in ("post-a", "post-b")]
        driver = browser(folder)
        to_page, broker_hop, clip_delivery = [], [], []
        try:
            driver.get(console.url + "/login")
            driver.find_element(By.ID, "user").send_keys(OPERATOR)
            driver.find_element(By.ID, "password").send_keys(PASSWORD)
            driver.find_element(By.ID, "submit").click()
            WebDriverWait(driver, 10).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#units tbody tr"))
            time.sleep(1.0)
            weight = page_weight(driver)
            for k in range(alerts):
                start = datetime.now(UTC) - timedelta(seconds=2)
                opened = units[k % 2].hear(start, 2.0, "open")
                row = f'#alerts tr[data-id="{opened.id}"]'
                shown = WebDriverWait(driver, 10, poll_frequency=0.01, ignored_exceptions=(
                    NoSuchElementException, StaleElementReferenceException)).until(
                    lambda d, row=row: d.find_element(By.CSS_SELECTOR, row).get_attribute("data-shown-at"))
                (line,) = [a for a in fleet.of("alert") if a["id"] == opened.id]
                sent = parse_utc(str(line["sent"]))
                to_page.append(int(shown) - sent * 1000.0)
                broker_hop.append((parse_utc(str(line["received"])) - sent) * 1000.0)
                units[k % 2].hear(start, 6.0, "closed", opened.id)
                deadline = time.monotonic() + 30
                clips: list[dict[str, object]] = []
                while not clips and time.monotonic() < deadline:
                    clips = [c for c in fleet.of("clip") if c["id"] == opened.id]
                    time.sleep(0.01)
                (closed,) = [a for a in fleet.of("alert") if a["id"] == opened.id and a["state"] == "closed"]
                clip_delivery.append(
                    (parse_utc(str(clips[0]["received"])) - parse_utc(str(closed["received"]))) * 1000)
                time.sleep(0.3)
            driver.find_element(By.CSS_SELECTOR, "#alerts tbody tr").click()
            WebDriverWait(driver, 10).until(lambda d: d.execute_script(
                "const a = document.getElementById('clip'); return a.readyState >= 1 && a.duration"))
            time.sleep(1.0)
            with_clip = page_weight(driver)
        finally:
            driver.quit()
            for unit in units:
                unit.forwarder.close(1.0)
            fleet.close()
            console.close()
            broker.stop()
    return {"machine": machine(),
            "alerts": alerts, "alert_to_page_ms": summary(to_page), "unit_to_fleet_ms": summary(broker_hop),
            "clip_after_closed_alert_ms": summary(clip_delivery), "clip_seconds": 9.0,
            "page_bytes_first_load": weight, "page_bytes_first_load_total": sum(weight.values()),
            "bytes_with_one_clip_and_spectrogram": {k: with_clip.get(k, 0) for k in ("clip", "spectrogram")}}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=20)
    print(json.dumps(run(parser.parse_args().alerts), indent=2))
