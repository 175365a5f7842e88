"""The Evaluate tab in a real headless Chromium when Evaluate starts nothing: a refused Evaluate after a run leaves
that run's results labelled as the previous run's (they stayed below the new warning as if they were its results,
also after a reload: blind tester), and a file of another kind put in the upload box is kept and said, with the
kinds it takes (the box dropped gen.py unsaid, and Evaluate then asked for an upload: blind tester)."""

from pathlib import Path

import pytest

from test_browser import CHROMIUM, _open_tab, _uploaded, page  # noqa: F401  (page: the module's browser fixture)
from test_evaluate_app import write_colour_set

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason="Chromium is not installed (apt-get install chromium chromium-driver)")

PROGRESS, VERDICT = "#vlmchat-eval-progress", "#vlmchat-eval-verdict"


def _evaluate(panel, path: str) -> None:
    panel.get_by_label("…or a file, folder or .zip on this computer").fill(path)
    panel.get_by_role("button", name="Evaluate", exact=True).click()


def _labels(panel) -> str:
    """The panel's text: the results table's and the CSV's labels among it."""
    return panel.inner_text()


def test_a_refused_evaluate_shows_the_last_runs_results_as_that_runs(page, tmp_path):
    _open_tab(page, "Evaluate")
    panel = page.locator("[role=tabpanel]:visible")
    if panel.get_by_label("Clear").count():  # an earlier test's upload would be refused beside the path
        panel.get_by_label("Clear").first.click()
    _evaluate(panel, str(write_colour_set(tmp_path / "set", count=4)))
    page.wait_for_function(f"() => document.querySelector('{PROGRESS}').innerText.includes('done')",
                           timeout=60_000)
    page.wait_for_function(f"() => document.querySelector('{VERDICT}').innerText.includes('Verdict')")
    assert "of the previous run" not in _labels(panel)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("", encoding="utf-8")
    _evaluate(panel, str(empty))
    page.wait_for_function(f"() => document.querySelector('{PROGRESS}').innerText.includes('is empty')")
    page.wait_for_function(f"() => document.querySelector('{VERDICT}').innerText.includes(\"previous run's\")",
                           timeout=5_000)  # it read "Verdict", as if the empty file had one
    assert "Nothing was evaluated this time" in page.locator(PROGRESS).inner_text()
    assert "Results of the previous run" in _labels(panel) and "(CSV) of the previous run" in _labels(panel)
    # Reloaded, the page shows its run again; a path that is not there then marks it the same way
    page.reload()
    page.wait_for_selector("textarea")
    _open_tab(page, "Evaluate")
    panel = page.locator("[role=tabpanel]:visible")
    page.wait_for_function(f"() => document.querySelector('{VERDICT}').innerText.startsWith('Verdict')")
    assert "of the previous run" not in _labels(panel)
    _evaluate(panel, str(tmp_path / "not-there.jsonl"))
    page.wait_for_function(f"() => document.querySelector('{PROGRESS}').innerText.includes('does not exist')")
    page.wait_for_function(f"() => document.querySelector('{VERDICT}').innerText.includes(\"previous run's\")",
                           timeout=5_000)
    assert "Results of the previous run" in _labels(panel)
    # a run after it has its results labelled as its own again
    _evaluate(panel, str(tmp_path / "set" / "colours.jsonl"))
    page.wait_for_function(f"() => document.querySelector('{VERDICT}').innerText.startsWith('Verdict')",
                           timeout=60_000)
    assert "of the previous run" not in _labels(panel)


def test_an_uploaded_file_of_another_kind_is_kept_and_said_with_the_kinds_taken(page, tmp_path):
    _open_tab(page, "Evaluate")
    panel = page.locator("[role=tabpanel]:visible")
    panel.get_by_label("…or a file, folder or .zip on this computer").fill("")
    script = tmp_path / "gen.py"
    script.write_text("print('not an eval set')\n", encoding="utf-8")
    panel.locator("input[type=file]").first.set_input_files(str(script))
    said = "'gen.py' is not an eval-set upload"
    # said as it arrives (the box came back empty, unsaid)
    page.wait_for_function(f"() => document.querySelector('{PROGRESS}').innerText.includes(\"{said}\")",
                           timeout=10_000)
    _uploaded(panel, "gen.py", timeout=5_000)  # kept in the box
    progress = page.locator(PROGRESS).inner_text()
    assert ".zip" in progress and ".jsonl" in progress and ".csv" in progress  # the kinds it takes
    # Evaluate says it again, not "Upload an eval set" (after another message, so that the line has changed)
    _evaluate(panel, str(tmp_path / "other.jsonl"))
    page.wait_for_function(f"() => document.querySelector('{PROGRESS}').innerText.includes('a path is typed')")
    panel.get_by_label("…or a file, folder or .zip on this computer").fill("")
    panel.get_by_role("button", name="Evaluate", exact=True).click()
    page.wait_for_function(f"() => document.querySelector('{PROGRESS}').innerText.includes(\"{said}\")",
                           timeout=10_000)
    assert "Upload an eval set" not in page.locator(PROGRESS).inner_text()
    panel.get_by_label("Clear").first.click()
