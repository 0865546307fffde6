"""The gateway's web page in a real headless Chromium (Debian's chromium + chromium-driver,
driven by Selenium) against a real stack: sign in, upload, wait, see the result, screenshot;
a bad token and a corrupt image show text a person can act on; four channel images give
masks and each cell's classes."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from labsight.images import encode_png
from services.classifier.generated_cells import generate_cell_field
from tests.integration.web_support import WebStack, png_bytes, web_stack

webdriver = pytest.importorskip("selenium.webdriver", reason="pip install selenium (the [test] extras)")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as ec  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

__all__ = ["web_stack"]

APT = "apt-get install -y --no-install-recommends chromium chromium-driver"
WAIT_S = 120


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    """A headless Chromium driven by chromedriver; skipped when they are not installed."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip(f"chromium and chromedriver not found: {APT}")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1400,1800"):
        options.add_argument(argument)
    chrome = webdriver.Chrome(service=webdriver.ChromeService(executable_path=driver), options=options)
    try:
        yield chrome
    finally:
        chrome.quit()


def sign_in(browser: webdriver.Chrome, stack: WebStack, token: str) -> None:
    field = browser.find_element(By.ID, "token")
    field.clear()
    field.send_keys(token)
    browser.find_element(By.ID, "login-button").click()


def error_text(browser: webdriver.Chrome) -> str:
    WebDriverWait(browser, WAIT_S).until(ec.visibility_of_element_located((By.ID, "error")))
    return browser.find_element(By.ID, "error").text


def test_upload_wait_see_result_and_readable_errors(
    browser: webdriver.Chrome, web_stack: WebStack, tmp_path: Path
) -> None:
    browser.get(web_stack.web.url)
    sign_in(browser, web_stack, "not-a-token")
    refused = error_text(browser)
    assert "Sign-in refused" in refused and "UNAUTHENTICATED" in refused
    assert "Traceback" not in refused and browser.find_element(By.ID, "app").is_displayed() is False

    sign_in(browser, web_stack, web_stack.token)
    WebDriverWait(browser, WAIT_S).until(ec.visibility_of_element_located((By.ID, "app")))
    assert not browser.find_element(By.ID, "error").is_displayed()
    Select(browser.find_element(By.ID, "pipeline")).select_by_value("fractal")
    browser.find_element(By.ID, "param-box_sizes").send_keys("3,5,7")

    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    browser.find_element(By.ID, "image").send_keys(str(corrupt))
    browser.find_element(By.ID, "submit-button").click()
    refused = error_text(browser)
    assert "input.image" in refused and "INVALID_ARGUMENT" in refused and "Traceback" not in refused

    image = tmp_path / "blobs.png"
    image.write_bytes(png_bytes())
    browser.find_element(By.ID, "image").send_keys(str(image))
    browser.find_element(By.ID, "submit-button").click()
    WebDriverWait(browser, WAIT_S).until(ec.visibility_of_element_located((By.ID, "result")))
    WebDriverWait(browser, WAIT_S).until(
        lambda b: b.execute_script("const i = document.getElementById('composite');"
                                   "return i.complete && i.naturalWidth > 0;"))
    assert browser.find_element(By.ID, "job-status").text == "done"
    assert not browser.find_element(By.ID, "error").is_displayed()
    assert "blobs.png (fractal)" in browser.find_element(By.ID, "result-name").text
    rows = browser.find_elements(By.CSS_SELECTOR, "#features tbody tr")
    headers = [cell.text for cell in browser.find_elements(By.CSS_SELECTOR, "#features thead th")]
    assert rows and headers[0] == "id" and len(headers) > 2
    assert [b.text for b in browser.find_elements(By.CSS_SELECTOR, "#downloads button")] == ["table (CSV)"]
    screenshot = tmp_path / "web_page_fractal.png"
    assert browser.save_screenshot(str(screenshot))
    assert screenshot.stat().st_size > 10_000

    # The four channel images of one HPA image: cells with outlines and ids, their top classes.
    field = generate_cell_field(5, size=256, cells=4)
    Select(browser.find_element(By.ID, "pipeline")).select_by_value("hpa-cells")
    browser.find_element(By.CSS_SELECTOR, "input[name=mode][value=channels]").click()
    browser.find_element(By.ID, "param-pixel_size_um").send_keys("0.3")
    browser.find_element(By.ID, "param-method").send_keys("classical")
    for index, channel in enumerate(("red", "green", "blue", "yellow")):
        path = tmp_path / f"field_{channel}.png"
        path.write_bytes(encode_png(np.ascontiguousarray(field.image[..., index])))
        browser.find_element(By.ID, f"channel-{channel}").send_keys(str(path))
    browser.find_element(By.ID, "submit-button").click()
    WebDriverWait(browser, WAIT_S).until(
        lambda b: "hpa-cells" in b.find_element(By.ID, "result-name").text
        and all(b.execute_script(f"const i = document.getElementById('{picture}');"
                                 "return !i.parentElement.hidden && i.complete && i.naturalWidth > 0;")
                for picture in ("composite", "masks", "classes-picture")))
    classes = browser.find_elements(By.CSS_SELECTOR, "#classes tbody tr")
    assert classes and all(row.text.count("(") == 3 for row in classes)
    downloads = [b.text for b in browser.find_elements(By.CSS_SELECTOR, "#downloads button")]
    assert downloads == ["table (CSV)", "masks (TIFF)"]
    screenshot = tmp_path / "web_page_hpa_cells.png"
    assert browser.save_screenshot(str(screenshot))
