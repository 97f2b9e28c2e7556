"""The web page, driven in headless Chromium against `emomatch serve` on 127.0.0.1: upload a
generated clip and read the label, emotion over time for a long clip, a refused upload's
message, and recording from Chromium's fake microphone and camera through MediaRecorder.

Chromium and its driver are Debian's (`make test` installs them as root where apt-get works);
where neither is there the tests skip and say so."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.serve_fixtures import CLASSES, free_port, make_clip, tiny_bundle

INSTALL = "apt-get install chromium chromium-driver (make test does it when run as root)"


def _browser() -> tuple[str, str]:
    binary = next(
        (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p),
        None,
    )
    driver = shutil.which("chromedriver") or (
        "/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else None
    )
    if binary is None or driver is None:
        missing = "Chromium" if binary is None else "chromedriver"
        pytest.skip(f"{missing} is not installed: {INSTALL}")
    return binary, driver


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`emomatch serve` itself, in a process of its own, as a user would start it."""
    _browser()
    bundle = tiny_bundle(tmp_path_factory)
    port = free_port()
    log = tmp_path_factory.mktemp("serve-log") / "serve.log"
    command = [
        str(Path(sys.executable).with_name("emomatch")), "serve", str(bundle),
        "--port", str(port), "--no-transcribe", "--segment-seconds", "2", "--max-seconds", "20",
    ]  # fmt: skip
    with open(log, "w") as out:
        server = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if server.poll() is not None:
                raise AssertionError(f"emomatch serve ended: {log.read_text()}")
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"emomatch serve did not answer: {log.read_text()}")
            time.sleep(0.2)
        yield base
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver_path = _browser()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in (
        "--headless=new",
        "--no-sandbox",  # the tests may run as root
        "--disable-dev-shm-usage",
        "--window-size=900,1200",
        # A microphone and a camera that play a tone and a test pattern, granted without asking.
        "--use-fake-device-for-media-stream",
        "--use-fake-ui-for-media-stream",
    ):
        options.add_argument(flag)
    # The driver's path is given so that Selenium Manager never looks for one on the network.
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def open_page(browser, site: str):  # type: ignore[no-untyped-def]
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(site)
    wait = WebDriverWait(browser, 60)
    wait.until(lambda d: "Classes:" in d.find_element("id", "model").text)
    return wait


def result_label(browser, wait) -> str:  # type: ignore[no-untyped-def]
    wait.until(lambda d: d.find_element("id", "label").text or d.find_element("id", "error").text)
    assert browser.find_element("id", "error").text == ""
    return str(browser.find_element("id", "label").text).lower()


def bars(browser) -> dict[str, float]:  # type: ignore[no-untyped-def]
    rows = browser.find_elements("css selector", "#bars .bar")
    return {
        r.get_attribute("data-label"): float(r.find_element("class name", "value").text.split()[0])
        for r in rows
    }


def test_upload_a_clip_and_read_the_label(site: str, browser, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    clip = make_clip(tmp_path / "hello.wav", "angry", 1.5)
    wait = open_page(browser, site)
    assert browser.find_element("id", "model").text.startswith(f"Classes: {', '.join(CLASSES)}")
    browser.find_element("id", "clip").send_keys(str(clip))
    wait.until(lambda d: "hello.wav" in d.find_element("id", "chosen").text)
    browser.find_element("id", "text").send_keys("This is unfair, I am furious!")
    browser.find_element("id", "predict").click()
    label = result_label(browser, wait)
    shown = bars(browser)
    assert label in CLASSES
    assert sorted(shown) == sorted(CLASSES)
    assert sum(shown.values()) == pytest.approx(100, abs=0.5)
    assert max(shown, key=shown.get) == label
    assert "acoustic, lexical" in browser.find_element("id", "used").text
    assert browser.find_element("id", "missing").text == "not used: visual: no video"
    assert not browser.find_element("id", "timeline-box").is_displayed()


def test_long_clip_draws_emotion_over_time(site: str, browser, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    clip = make_clip(tmp_path / "long.wav", "sad", 5.0)
    wait = open_page(browser, site)
    browser.find_element("id", "clip").send_keys(str(clip))
    browser.find_element("id", "predict").click()
    assert result_label(browser, wait) in CLASSES
    assert browser.find_element("id", "timeline-box").is_displayed()
    lines = browser.find_elements("css selector", "#timeline svg polyline")
    assert sorted(line.get_attribute("data-label") for line in lines) == sorted(CLASSES)
    # One strip per window: 0-2, 2-4, 4-5 s.
    assert len(browser.find_elements("css selector", "#timeline svg rect")) == 3
    assert all(len(line.get_attribute("points").split()) == 3 for line in lines)


def test_refused_upload_shows_why(site: str, browser, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    notes = tmp_path / "notes.txt"
    notes.write_text("not a recording")
    wait = open_page(browser, site)
    browser.find_element("id", "clip").send_keys(str(notes))
    browser.find_element("id", "predict").click()
    wait.until(lambda d: d.find_element("id", "error").text)
    error = browser.find_element("id", "error").text
    assert error.startswith("415:") and "not audio or video" in error
    assert not browser.find_element("id", "result").is_displayed()


@pytest.mark.parametrize(
    ("button", "used"), [("record-audio", "acoustic"), ("record-video", "acoustic, visual")]
)
def test_record_and_predict(site: str, browser, button: str, used: str) -> None:  # type: ignore[no-untyped-def]
    wait = open_page(browser, site)
    browser.find_element("id", button).click()
    wait.until(lambda d: d.find_element("id", "stop").is_enabled())
    time.sleep(2.0)
    browser.find_element("id", "stop").click()
    wait.until(lambda d: "recording." in d.find_element("id", "chosen").text)
    assert "webm" in browser.find_element("id", "chosen").text
    browser.find_element("id", "predict").click()
    assert result_label(browser, wait) in CLASSES
    assert browser.find_element("id", "used").text.startswith(f"from {used}")


class AcousticOnly:
    """A predictor of voice alone (the page must not offer a camera or a transcript box)."""

    labels = CLASSES
    modalities = ["acoustic"]

    def predict(self, *args: object, **kwargs: object) -> object:
        raise AssertionError("the page only describes the model here")

    def predict_segments(self, *args: object, **kwargs: object) -> object:
        raise AssertionError("the page only describes the model here")


def test_the_page_offers_only_the_inputs_the_model_reads(browser) -> None:  # type: ignore[no-untyped-def]
    from emomatch.serve import ServeSettings, create_app
    from tests.support.serve_fixtures import running

    with running(create_app([AcousticOnly()], ServeSettings())) as url:
        open_page(browser, url)
        assert "reads acoustic" in browser.find_element("id", "model").text
        assert browser.find_element("id", "record-audio").is_displayed()
        assert not browser.find_element("id", "record-video").is_displayed()
        assert not browser.find_element("id", "transcript").is_displayed()
