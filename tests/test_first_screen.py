"""The first screen says what the loaded model can do: for the demo, its one shape, four colours, two languages and
the size range measured by benchmarks/demo_range.py, in real Chromium."""

from __future__ import annotations

from dataclasses import replace

import pytest

from test_browser import CHROMIUM, pytestmark as needs_chromium
from vlmchat.demo.about import NOTE
from vlmchat.ui.app import capability_note, status_line


def test_the_demo_note_names_what_the_demo_knows():
    for fact in ("circle, square or triangle", "red, green, blue or yellow", "always in Spanish with the demo-es adapter",
                 "French, Italian, Portuguese or German when asked",
                 "35%-90% of the picture's shorter side", "no wider or taller than 2:1",
                 "load a real model in the Model tab"):
        assert fact in NOTE


def test_the_note_follows_the_loaded_model(manager):
    assert capability_note(manager) == NOTE and status_line(manager).endswith(NOTE)
    # Chat's Image detail control says the Model line tells why: for the demo, that detail changes nothing
    assert "**image detail:** one size" in status_line(manager) and "changes nothing" in status_line(manager)
    real = replace(manager.info, model_id="HuggingFaceTB/SmolVLM-256M-Instruct", source="/cache/smolvlm")
    saved, manager.info = manager.info, real
    try:
        assert "the Model tab loads another model" in capability_note(manager)
        assert NOTE not in status_line(manager)
    finally:
        manager.info = saved


@pytest.mark.slow
@needs_chromium
def test_the_first_screen_shows_the_note_under_the_status(app):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM,
                                             args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(app.url)
            status = page.locator("#vlmchat-status")
            status.get_by_text("Demo model: one red").wait_for(timeout=60_000)
            text = status.inner_text()
            assert "Model: demo" in text.replace("`", "")
            assert text.index("why:") < text.index("Demo model: one red")
            assert "load a real model in the Model tab" in text
            # the photo among the examples says the demo cannot answer it (its "a red triangle" read as a bug)
            page.get_by_text("Describe the image. (grace-hopper.jpg; a photo, for a real model").wait_for()
            # the question box on a laptop's screen without scrolling: at 1366 x 650 it was at y = 955 (UI tester)
            page.set_viewport_size({"width": 1366, "height": 650})
            page.wait_for_timeout(300)
            box = page.locator("#vlmchat-chat-input textarea").bounding_box()
            assert box["y"] + box["height"] <= 650, box
        finally:
            browser.close()
