"""The operators' console in a real browser (headless Chromium, tests/console_browser.py), fed by
real units' forwarders through a real Mosquitto: log in, see a live alert arrive, play its
clip, judge it, export the judged clips as a training folder, see the fix drawn; and what it
refuses: a wrong password, a state change without the CSRF token, any page without a session,
a flood of logins. Screenshots of the main views are kept under test-artefacts/console/."""

from __future__ import annotations

import csv
import http.client
import http.cookiejar
import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import soundfile as sf

from tests.broker import Broker
from tests.conftest import REPO
from tests.console_browser import OPERATOR, PASSWORD, browser, need_browser, start_post, start_unit

ARTEFACTS = Path(os.environ.get("NIGHTEAR_ARTEFACTS", REPO / "test-artefacts")) / "console"


@pytest.fixture()
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path / "broker")
    yield b
    b.stop()


def wait(driver: Any, condition: Any, timeout_s: float = 15.0, what: str = "") -> Any:
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    # the page redraws its tables on every line from the stream: an element may go stale
    return WebDriverWait(driver, timeout_s, poll_frequency=0.05, ignored_exceptions=(
        NoSuchElementException, StaleElementReferenceException)).until(condition, what)


def log_in(driver: Any, url: str, user: str, password: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(url + "/login")
    driver.find_element(By.ID, "user").send_keys(user)
    driver.find_element(By.ID, "password").send_keys(password)
    driver.find_element(By.ID, "submit").click()


def shot(driver: Any, name: str) -> None:
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(ARTEFACTS / f"{name}.png"))


def test_an_operator_hears_judges_and_exports_an_alert_and_sees_its_fix(broker: Broker,
                                                                        tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    need_browser()
    fleet, console = start_post(broker, tmp_path)
    units = [start_unit(broker, tmp_path, node) for node in ("post-a", "post-b")]
    driver = browser(tmp_path)
    try:
        log_in(driver, console.url, OPERATOR, PASSWORD)
        wait(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#units tbody tr")) == 2,
             what="both units")
        start = datetime.now(UTC) - timedelta(seconds=2)
        opened = units[0].hear(start, 2.0, "open")
        row_of = f'#alerts tr[data-id="{opened.id}"]'
        text = wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, row_of).text, what="the live alert")
        assert "DRONE" in text and "post-a" in text and "0.98" in text
        shot(driver, "alert")
        units[0].hear(start, 6.0, "closed", opened.id)
        units[1].hear(start, 6.0, "closed")
        wait(driver, lambda d: "♪" in d.find_element(By.CSS_SELECTOR, row_of).text, 30, "the clip")
        wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, row_of).click() or True, what="a click")
        duration = wait(driver, lambda d: d.execute_script(
            "const a = document.getElementById('clip'); return a.readyState >= 1 && a.duration"), what="clip")
        assert abs(duration - 9.0) < 0.05  # 6 s of event and 3 s of pre-roll, as the unit wrote it
        wait(driver, lambda d: d.execute_script(
            "return document.getElementById('spectrogram').naturalWidth") > 100, what="the spectrogram")
        driver.find_element(By.ID, "ack").click()
        wait(driver, lambda d: "acknowledged by ops" in d.find_element(By.ID, "ev-marks").text,
             what="the acknowledgement")
        driver.find_element(By.CSS_SELECTOR, 'button[data-verdict="drone"]').click()
        wait(driver, lambda d: 'judged "drone" by ops' in d.find_element(By.ID, "ev-marks").text,
             what="the verdict")
        assert "acknowledged by ops at" in driver.find_element(By.ID, "ev-marks").text
        shot(driver, "evidence")
        driver.find_element(By.ID, "export").click()
        wait(driver, lambda d: "Exported 1 drone" in d.find_element(By.ID, "export-result").text,
             what="the export")
        wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#plan circle.fix"), what="the fix drawn")
        assert driver.find_elements(By.CSS_SELECTOR, "#plan ellipse.ellipse")
        wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#plan polyline.track"), what="the track")
        assert len(driver.find_elements(By.CSS_SELECTOR, "#plan circle.unit")) == 2
        assert "east, m" in driver.find_element(By.ID, "plan").text
        units_text = driver.find_element(By.ID, "units").text
        assert "58.2 °C" in units_text and "-52 dBFS" in units_text and "nightear-drone-3.4.0" in units_text
        loaded = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        assert loaded and all(url.startswith(console.url + "/") for url in loaded)  # no CDN, no font
        driver.set_window_size(1400, 1400)
        driver.execute_script("window.scrollTo(0, 0)")
        shot(driver, "console")
    finally:
        driver.quit()
        for unit in units:
            unit.forwarder.close(1.0)
        fleet.close()
        console.close()
    (row,) = list(csv.DictReader((tmp_path / "judged" / "labels.csv").open()))
    assert row["label"] == "drone" and row["event"] == opened.id and row["path"].startswith("post-a/")
    assert row["group"].startswith("post-a/") and row["path"].endswith(".flac")
    assert abs(sf.info(tmp_path / "judged" / row["path"]).duration - 9.0) < 0.01
    from nightear_training.data import load_folder  # what build-default --folder reads

    (clip,) = load_folder(tmp_path / "judged")
    assert clip.label == "drone" and clip.group == row["group"]


class Client:
    """A plain HTTP client with cookies, to try what a page never would."""

    def __init__(self, url: str):
        self.url = url
        self.jar = http.cookiejar.CookieJar()

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args: Any) -> None:
                return None

        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar), NoRedirect)

    def call(self, path: str, data: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, str]:
        request = urllib.request.Request(self.url + path, data=data, headers=headers or {},
                                         method="POST" if data is not None else "GET")
        try:
            with self.opener.open(request, timeout=10) as response:
                return response.status, response.read().decode(errors="replace")
        except urllib.error.HTTPError as exc:
            return exc.code, (exc.headers.get("Location") or "") + exc.read().decode(errors="replace")


def test_the_console_refuses_a_wrong_password_a_missing_csrf_token_and_pages_without_a_session(
        broker: Broker, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    need_browser()
    fleet, console = start_post(broker, tmp_path)
    unit = start_unit(broker, tmp_path, "post-a")
    event = unit.hear(datetime.now(UTC) - timedelta(seconds=3), 2.0, "open")
    driver = browser(tmp_path)
    try:
        log_in(driver, console.url, OPERATOR, "not-the-password")
        wait(driver, lambda d: "Wrong name or password." in d.find_element(By.ID, "message").text,
             what="the refusal")
        assert driver.current_url.endswith("/login") and driver.get_cookies() == []
        shot(driver, "login-refused")
        stranger = Client(console.url)
        for path in ("/", "/static/console.js", f"/api/clips/{event.id}.flac"):
            status, body = stranger.call(path)
            assert status == 303 and body.startswith(console.url + "/login") or status == 401, (path, status)
        assert stranger.call("/api/state")[0] == 401 and stranger.call("/api/stream")[0] == 401
        assert stranger.call(f"/api/events/{event.id}/ack", b"{}")[0] == 401
        operator = Client(console.url)
        status, _ = operator.call("/login", f"user={OPERATOR}&password={PASSWORD}".encode())
        assert status == 303 and [c.name for c in operator.jar] == ["nightear_session"]
        cookie = next(iter(operator.jar))
        assert cookie.has_nonstandard_attr("HttpOnly")
        assert str(cookie.get_nonstandard_attr("SameSite")).lower() == "strict"
        _, page = operator.call("/")
        token = page.split('name="csrf" content="', 1)[1].split('"', 1)[0]
        verdict = json.dumps({"verdict": "not-drone"}).encode()
        path = f"/api/events/{event.id}/verdict"
        assert operator.call(path, verdict, {"Content-Type": "application/json"})[0] == 403
        wrong = {"Content-Type": "application/json", "X-CSRF-Token": "x" + token}
        assert operator.call(path, verdict, wrong)[0] == 403
        assert operator.call("/api/export", b"{}")[0] == 403
        assert fleet.fleet.store.verdicts() == {}  # nothing changed
        right = {"Content-Type": "application/json", "X-CSRF-Token": token}
        status, body = operator.call(path, verdict, right)
        assert status == 200 and json.loads(body)["by"] == OPERATOR
        flood = Client(console.url)  # the browser's one try and the operator's make two of five
        codes = [flood.call("/login", b"user=ops&password=guess")[0] for _ in range(4)]
        assert codes == [401, 401, 401, 429]
    finally:
        driver.quit()
        unit.forwarder.close(1.0)
        fleet.close()
        console.close()


def test_detect_and_listen_never_load_the_console_or_the_post() -> None:
    import subprocess
    import sys

    probe = ("import sys, nightear.cli, nightear.daemon, nightear.detect, nightear.sinks.mqtt; "
             "print(sorted(m for m in sys.modules if m.startswith(('bottle', 'argon2', 'nightear.fleet'))))")
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "['nightear.fleet', 'nightear.fleet.settings']"  # the config's section only


def fleet_yaml(tmp_path: Path, broker: Broker, console: dict[str, object]) -> Path:
    import yaml

    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump({"mqtt": broker.unit_config(tls=False),
                                    "fleet": {"store": str(tmp_path / "fleet.db"), "console": console}}))
    return path


def test_the_console_needs_an_operator_and_tls_beyond_loopback(broker: Broker, tmp_path: Path) -> None:
    import ssl
    import subprocess
    import sys

    from tests.conftest import run_cli

    pytest.importorskip("bottle", reason="the fleet extra: pip install -e '.[dev]'")
    hashed = subprocess.run([sys.executable, "-m", "nightear", "fleet", "--hash-password"],
                            input=f"{PASSWORD}\n", capture_output=True, text=True, cwd=REPO,
                            check=True).stdout.strip()
    assert hashed.startswith("$argon2id$")
    nobody = run_cli("fleet", "--config", str(fleet_yaml(tmp_path, broker, {})), "--http", "127.0.0.1:0")
    assert nobody.returncode == 2 and nobody.stderr.startswith(
        "nightear: error: fleet.console.users: no operator can log in")
    beyond = run_cli("fleet", "--config", str(fleet_yaml(tmp_path, broker, {"users": {OPERATOR: hashed}})),
                     "--http", "0.0.0.0:0")
    assert beyond.returncode == 2 and beyond.stderr.strip() == (
        "nightear: error: fleet.console.http 0.0.0.0:0: not loopback, so it needs TLS: set "
        "fleet.console.cert_file and key_file")
    from nightear.fleet.console.server import start_console
    from nightear.fleet.settings import ConsoleSettings

    console = start_console(ConsoleSettings(http="127.0.0.1:0", users={OPERATOR: hashed},
                                            cert_file=str(broker.folder / "server.crt"),
                                            key_file=str(broker.folder / "server.key")), None, [].append)
    try:
        assert console.url.startswith("https://127.0.0.1:")
        trusted = ssl.create_default_context(cafile=str(broker.folder / "ca.crt"))
        with urllib.request.urlopen(console.url + "/login", context=trusted, timeout=10) as page:
            assert page.status == 200 and 'action="/login"' in page.read().decode()
        refused = (urllib.error.URLError, http.client.HTTPException, ConnectionError)
        with pytest.raises(refused):  # no plain text
            urllib.request.urlopen(console.url.replace("https", "http") + "/login", timeout=10)
    finally:
        console.close()


def test_nightear_fleet_http_serves_the_console_and_stops_cleanly(broker: Broker,
                                                                  tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    import time

    from tests.broker import free_port, wait_for
    from tests.console_browser import hashed

    pytest.importorskip("bottle", reason="the fleet extra: pip install -e '.[dev]'")
    config = fleet_yaml(tmp_path, broker, {"users": {OPERATOR: hashed(PASSWORD)}})
    port = free_port()
    post = subprocess.Popen([sys.executable, "-m", "nightear", "fleet", "--config", str(config), "--http",
                             f"127.0.0.1:{port}"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        operator = Client(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 20
        while True:
            try:
                if operator.call("/login", f"user={OPERATOR}&password={PASSWORD}".encode())[0] == 303:
                    break
            except urllib.error.URLError:  # not listening yet
                pass
            assert post.poll() is None and time.monotonic() < deadline, "the console did not come up"
            time.sleep(0.2)
        wait_for(lambda: json.loads(operator.call("/api/state")[1])["link"] is True, 10, "the broker")
    finally:
        post.send_signal(signal.SIGTERM)
        out, err = post.communicate(timeout=20)
    assert post.returncode == 0 and "Traceback" not in err
    assert f"nightear: console at http://127.0.0.1:{port}" in err and f"{OPERATOR} logged in" in err
    assert json.loads(out.splitlines()[0])["kind"] == "link"  # JSON lines into a pipe
