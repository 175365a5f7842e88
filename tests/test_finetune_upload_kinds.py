"""The Fine-tune tab's upload box in a real headless Chromium: a file of another kind is kept in the box and Check
dataset says which kinds are taken (the box's file-type filter dropped it in the browser unsaid, as the Evaluate
tab's did: blind tester)."""

from pathlib import Path

import pytest

from test_browser import CHROMIUM, _open_tab, _uploaded, page  # noqa: F401  (page: the module's browser fixture)

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason="Chromium is not installed (apt-get install chromium chromium-driver)")

REPORT = "#vlmchat-finetune-report"


def test_a_file_of_another_kind_stays_in_the_box_and_check_says_the_kinds_taken(page, tmp_path):
    _open_tab(page, "Fine-tune")
    panel = page.locator("[role=tabpanel]:visible")
    if panel.get_by_label("Clear").count():  # an earlier test's upload
        panel.get_by_label("Clear").first.click()
    script = tmp_path / "gen.py"
    script.write_text("print('not a dataset')\n", encoding="utf-8")
    panel.locator("input[type=file]").first.set_input_files(str(script))
    _uploaded(panel, "gen.py", timeout=10_000)  # kept in the box (it came back empty)
    panel.get_by_role("button", name="Check dataset").click()
    page.wait_for_function(f"() => document.querySelector('{REPORT}').innerText.includes(\"'gen.py' is not a "
                           "dataset upload\")", timeout=10_000)
    report = page.locator(REPORT).inner_text()
    assert ".zip" in report and ".jsonl" in report and ".parquet" in report  # the kinds it takes
    panel.get_by_label("Clear").first.click()
