"""The UI in a real headless Chromium (Debian's package): chat, caption, compare, and a screenshot per tab.

Screenshots are saved to outputs/test-artifacts/ as test artifacts.
"""

import shutil
from pathlib import Path

import pytest

from conftest import ROOT

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = ROOT / "outputs" / "test-artifacts"

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason="Chromium is not installed (apt-get install chromium chromium-driver)")


@pytest.fixture(scope="module")
def page(app):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--no-first-run", "--disable-sync"])
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.set_default_timeout(60_000)
        page.goto(app.url)
        page.wait_for_selector("textarea")
        yield page
        browser.close()


def _open_tab(page, name):
    page.get_by_role("tab", name=name).click()
    page.wait_for_timeout(300)


def test_chat_upload_and_streamed_answer(page, picture_files):
    _open_tab(page, "Chat")
    page.locator("input[type=file]").first.set_input_files(str(picture_files[("red", "circle")]))
    box = page.locator("textarea").first
    box.fill("Describe the image.")
    box.press("Enter")
    page.wait_for_function("() => [...document.querySelectorAll('.bot-row')].some(e => e.innerText.includes('a red circle'))")
    page.screenshot(path=str(ARTIFACTS / "chat.png"), full_page=True)


def test_compare_shows_base_and_spanish_side_by_side(page, picture_files):
    _open_tab(page, "Compare")
    panel = page.locator("[role=tabpanel]:visible")
    panel.locator("input[type=file]").first.set_input_files(str(picture_files[("green", "square")]))
    panel.get_by_role("button", name="Compare", exact=True).click()
    page.wait_for_function(
        "() => { const v = [...document.querySelectorAll('[role=tabpanel] textarea')].map(t => t.value);"
        " return v.includes('a green square') && v.includes('un cuadrado verde'); }")
    page.screenshot(path=str(ARTIFACTS / "compare.png"), full_page=True)


@pytest.mark.parametrize("tab", ["Caption", "Adapters", "Fine-tune", "Model"])
def test_every_tab_renders(page, tab):
    _open_tab(page, tab)
    assert page.locator("[role=tabpanel]:visible").count() >= 1
    page.screenshot(path=str(ARTIFACTS / f"{tab.lower()}.png"), full_page=True)
