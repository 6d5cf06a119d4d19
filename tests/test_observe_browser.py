"""The observatory in a real headless Chromium (Debian's chromium + chromium-driver, driven by Selenium):
the demo workspace's pages, a CLI pickup appearing on the open page, and Triage's one action.

Under CI (CI=true) a missing browser fails the run; elsewhere it skips with the command that installs it.
Screenshots of each page go to the test's tmp folder; the Live one also refreshes the README's image.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.observe_helpers import WAIT_TIMEOUT, Observer, devclaw, make_demo

selenium = pytest.importorskip("selenium")
from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

GROUP = "-1001234567890"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
README_IMAGE = Path(__file__).resolve().parent.parent / "docs" / "images" / "observe-live.png"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,900",
)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        message = "chromium and chromium-driver are needed: apt-get install -y chromium chromium-driver"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def demo_observer(tmp_path: Path) -> Iterator[tuple[Observer, Path]]:
    root = make_demo(tmp_path / "demo")
    with Observer(root, "--refresh", "3600") as observer:
        observer.history_read()  # so the screenshots show the whole history, not the read under way
        yield observer, root


# The page swaps its content whenever the server pushes a change: an element found a moment ago may be gone.
_REPLACED = (StaleElementReferenceException, NoSuchElementException)


def _wait(driver: webdriver.Chrome) -> WebDriverWait[webdriver.Chrome]:
    return WebDriverWait(driver, WAIT_TIMEOUT, ignored_exceptions=_REPLACED)


def _text(driver: webdriver.Chrome, selector: str) -> str:
    found: tuple[str] = _wait(driver).until(lambda d: (str(d.find_element(By.CSS_SELECTOR, selector).text),))
    return found[0]


def _click(driver: webdriver.Chrome, selector: str) -> bool:
    driver.find_element(By.CSS_SELECTOR, selector).click()
    return True


def _shoot(driver: webdriver.Chrome, folder: Path, name: str) -> Path:
    folder.mkdir(exist_ok=True)
    path = folder / f"observe-{name}.png"
    assert driver.save_screenshot(str(path))
    return path


def test_live_page_follows_a_cli_pickup_without_a_reload(
    browser: webdriver.Chrome, demo_observer: tuple[Observer, Path], tmp_path: Path
) -> None:
    observer, root = demo_observer
    browser.get(observer.url + "/")
    project = f"#project-{GROUP}"
    _wait(browser).until(lambda d: "queues read" in _text(d, project))  # the first tracker read has landed
    _wait(browser).until(expected_conditions.text_to_be_present_in_element((By.ID, "live-status"), "live"))
    card = _text(browser, project)
    assert "webapp" in card and "DEV" in card and "QA" in card
    assert _text(browser, f'{project} .queue[data-label="To Do"]').startswith("To Do 1")
    assert "Redesign session storage" in _text(browser, f'{project} .queue[data-label="To Do"]')
    assert "Fix typo in footer" in _text(browser, f'{project} .queue[data-label="Refining"]')
    assert "zombie_session" in _text(browser, f"{project} .health")
    browser.execute_script("window.notReloaded = true;")

    devclaw(root, "call", "task_pickup", json.dumps({"issueId": 3, "role": "dev", "projectGroupId": GROUP}))
    dev_row = f'{project} tr.worker[data-role="dev"]'
    _wait(browser).until(lambda d: "#3" in _text(d, dev_row))
    row = _text(browser, dev_row)
    assert "Redesign session storage" in row and "opus" in row and "in grace" in row
    assert browser.execute_script("return window.notReloaded === true;")
    _wait(browser).until(lambda d: _text(d, f'{project} .queue[data-label="To Do"]').startswith("To Do 0"))
    _shoot(browser, tmp_path / "screenshots", "live")
    if os.environ.get("DEVCLAW_UPDATE_SCREENSHOT"):  # regenerate the README's picture on purpose only
        README_IMAGE.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tmp_path / "screenshots" / "observe-live.png", README_IMAGE)


def test_timeline_and_analytics_pages(
    browser: webdriver.Chrome, demo_observer: tuple[Observer, Path], tmp_path: Path
) -> None:
    observer, _ = demo_observer
    browser.get(observer.url + "/timeline")
    first = f"#timeline-{GROUP}-1"
    _wait(browser).until(expected_conditions.presence_of_element_located((By.CSS_SELECTOR, first)))
    assert "done, cycle time" in _text(browser, first) and "back for fixes" in _text(browser, first)
    _shoot(browser, tmp_path / "screenshots", "timeline")
    browser.find_element(By.CSS_SELECTOR, 'select[name="role"] option[value="qa"]').click()
    browser.find_element(By.CSS_SELECTOR, "form.filters button").click()
    _wait(browser).until(lambda d: "role=qa" in d.current_url)
    assert not browser.find_elements(By.CSS_SELECTOR, f"#timeline-{GROUP}-3")  # #3 never reached QA

    browser.get(observer.url + "/analytics")
    _wait(browser).until(expected_conditions.presence_of_element_located((By.CSS_SELECTOR, "figure svg")))
    assert "Issues done and QA verdicts per day" in browser.page_source
    assert "No token usage recorded yet" in _text(browser, "#no-usage")
    _shoot(browser, tmp_path / "screenshots", "analytics")


def test_triage_sends_a_refining_issue_to_todo(
    browser: webdriver.Chrome, demo_observer: tuple[Observer, Path], tmp_path: Path
) -> None:
    observer, root = demo_observer
    browser.get(observer.url + "/triage")
    card = f"#triage-{GROUP}-2"
    _wait(browser).until(expected_conditions.presence_of_element_located((By.CSS_SELECTOR, card)))
    assert "Unclear whether the year should be dynamic" in _text(browser, card)
    _shoot(browser, tmp_path / "screenshots", "triage")
    _wait(browser).until(lambda d: _click(d, f"{card} button.send-to-todo"))
    _wait(browser).until(lambda d: "moved to To Do" in _text(d, "#notice"))
    assert not browser.find_elements(By.CSS_SELECTOR, card)
    assert devclaw(root, "issue", "show", GROUP, "2")["labels"] == ["To Do"]
    _shoot(browser, tmp_path / "screenshots", "triage-after")
    browser.get(observer.url + "/")
    _wait(browser).until(lambda d: "Fix typo in footer" in _text(d, f'#project-{GROUP} .queue[data-label="To Do"]'))


def test_chromium_is_the_debian_package() -> None:
    # The flags above are the ones Debian's build accepts; a different browser would make this file lie.
    if not CHROMIUM.exists():
        pytest.skip("chromium is not installed")
    version = subprocess.run([str(CHROMIUM), "--version"], capture_output=True, text=True, timeout=60).stdout
    assert version.startswith("Chromium"), version
