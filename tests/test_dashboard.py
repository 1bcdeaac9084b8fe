"""The dashboard in a real browser (headless Chromium) on the real stack: live charts, a failed job
found and retried from the page, the back button, a reload under it; and the README's screenshot."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from app.settings import PROJECT_ROOT
from tests.conftest import TOKEN, Stack, require

pytestmark = pytest.mark.integration

# Under var/ (ignored by git) unless asked for: `make screenshot` writes the README's copy.
SCREENSHOT = Path(os.environ.get("DASHBOARD_SCREENSHOT") or PROJECT_ROOT / "var" / "dashboard.png")
WAIT = 30


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    chromium = shutil.which("chromium")
    driver_path = shutil.which("chromedriver")
    require("Debian's chromium and chromium-driver", chromium is not None and driver_path is not None)
    assert chromium is not None and driver_path is not None
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    # The page itself 1280x900, whatever the window's frame takes: the README's screenshot.
    metrics = {"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": False}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    try:
        yield driver
    finally:
        driver.quit()


def until(driver: webdriver.Chrome, condition: Any, what: str) -> Any:
    """Wait for ``condition``; the page redraws its tables every poll, so a stale element retries."""
    wait = WebDriverWait(driver, WAIT, ignored_exceptions=(StaleElementReferenceException,))
    return wait.until(condition, message=f"waiting for {what}")


def click(driver: webdriver.Chrome, selector: str, what: str) -> None:
    """Click the element, again if a redraw replaced it under the click."""

    def clicked(d: webdriver.Chrome) -> bool:
        d.find_element(By.CSS_SELECTOR, selector).click()
        return True

    until(driver, clicked, what)


def text(driver: webdriver.Chrome, selector: str) -> str:
    found: str = driver.execute_script(f"return document.querySelector({selector!r}).textContent")
    return found


def points(driver: webdriver.Chrome, chart: str) -> int:
    """How many polls the chart has drawn."""
    count: int = driver.execute_script(f"return Chart.getChart('{chart}').data.labels.length")
    return count


def test_dashboard_draws_live_data_and_retries_a_failed_job_from_the_page(
    stack: Stack, browser: webdriver.Chrome
) -> None:
    browser.get(stack.url("/dashboard"))
    # The stack requires OPERATOR_TOKEN: the page asks for it once, then sends it with each call.
    until(browser, lambda d: d.find_element(By.ID, "login").is_displayed(), "the token form")
    browser.find_element(By.ID, "token").send_keys(TOKEN)
    browser.find_element(By.CSS_SELECTOR, "#login button").click()
    until(browser, lambda d: not d.find_element(By.ID, "login").is_displayed(), "the token form to close")
    for _ in range(5):
        stack.enqueue("diag.sleep", {"seconds": 0.2})
    until(browser, lambda d: points(d, "chart-requests") >= 3, "the charts to draw three polls")
    workers_drawn = browser.execute_script(
        "const [busy, idle] = Chart.getChart('chart-workers').data.datasets;"
        " return busy.data.map((b, i) => b + idle.data[i])"
    )
    assert workers_drawn and all(total == 4 for total in workers_drawn)  # busy + idle = PROCESSES
    kinds = browser.execute_script(
        "return [...document.querySelectorAll('#processes tbody tr')].map((row) => row.cells[0].textContent)"
    )
    assert kinds.count("worker") == 4 and kinds.count("spooler") == 2 and kinds.count("mule") == 1

    failed = stack.enqueue("diag.fail", {"times": 1}, max_attempts=1)
    stack.wait_for_job(failed["id"], ("failed",))
    Select(browser.find_element(By.ID, "filter-status")).select_by_value("failed")
    row = f"#jobs tr[data-job-id='{failed['id']}']"
    until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, row), "the failed job in the list")
    click(browser, f"{row} a", "the job's details link")
    until(browser, lambda d: d.find_element(By.ID, "retry").is_displayed(), "the retry button")
    traceback = text(browser, "#detail-traceback")
    assert "RuntimeError" in traceback and "diag.fail" in traceback
    request_id = text(browser, "dd[data-field='request id']")
    assert request_id == failed["request_id"]
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(SCREENSHOT))

    browser.find_element(By.ID, "retry").click()
    state = "dd[data-field='state']"
    until(
        browser,
        lambda d: d.find_element(By.CSS_SELECTOR, state).text == "succeeded",
        "the retried job to succeed",
    )
    assert stack.job(failed["id"])["status"] == "succeeded"

    # Back: the job's detail closes, the filter stays; back again: the filter goes too.
    browser.back()
    until(browser, lambda d: not d.find_element(By.ID, "detail").is_displayed(), "the detail to close")
    assert "status=failed" in browser.current_url
    browser.back()
    until(browser, lambda d: "status=failed" not in d.current_url, "the filter to be undone")
    assert (
        Select(browser.find_element(By.ID, "filter-status")).first_selected_option.get_attribute("value")
        == ""
    )

    # A graceful reload under the page: it goes on polling and drawing.
    drawn = points(browser, "chart-requests")
    stack.reload()
    until(browser, lambda d: points(d, "chart-requests") >= min(drawn + 3, 60), "polls after the reload")
    until(browser, lambda d: d.find_element(By.ID, "status").text.startswith("live"), "the page to be live")


def test_dashboard_cancels_a_waiting_job_from_the_page_it_opens_on(
    stack: Stack, browser: webdriver.Chrome
) -> None:
    waiting = stack.enqueue("diag.noop", delay=600)
    assert waiting["status"] == "scheduled"
    browser.get(stack.url("/dashboard"))
    until(browser, lambda d: d.find_element(By.ID, "login").is_displayed(), "the token form")
    browser.find_element(By.ID, "token").send_keys(TOKEN)
    browser.find_element(By.CSS_SELECTOR, "#login button").click()
    # The page's state is its URL: opened (or reloaded) on it, it shows the job.
    browser.get(stack.url(f"/dashboard?job={waiting['id']}"))
    until(browser, lambda d: d.find_element(By.ID, "cancel").is_displayed(), "the cancel button")
    assert not browser.find_element(By.ID, "retry").is_displayed()
    click(browser, "#cancel", "the cancel button")
    until(browser, lambda d: text(d, "dd[data-field='state']") == "cancelled", "the job to be cancelled")
    assert stack.job(waiting["id"])["status"] == "cancelled"
