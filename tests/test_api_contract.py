"""README's API table is the app's API: the same endpoints, parameter names, optional inputs and outputs.

The table is checked against `Client.view_api()` of a launched app, so neither can drift:
- every documented endpoint has a row in README's "API endpoints" table and every row an endpoint;
- a row's inputs cell names the parameters in order as `name`, required ones before the word
  "optional", optional ones (those with a default) after it;
- no output is left with Gradio's placeholder name (`value_12`), and every named output appears in
  the row's output cell.
"""

from __future__ import annotations

import re

import pytest

from conftest import ROOT

PLACEHOLDER = re.compile(r"^value_\d+$")
NAMELESS = ("1st",)  # gr.api outputs: Gradio names them by position, whatever the function
ROW = re.compile(r"^\| `(/[a-z_]+)` \| (.*?) \| (.*) \|$")


def readme_rows() -> dict[str, tuple[str, str]]:
    """endpoint -> (inputs cell, output cell) of README's "API endpoints" table."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## API endpoints", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        found = ROW.match(line.strip())
        if found:
            rows[found.group(1)] = (found.group(2), found.group(3))
    return rows


def named_in(cell: str) -> list[str]:
    """The backticked names of a cell, in order."""
    return re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)`", cell)


@pytest.fixture(scope="module")
def api(app):
    from gradio_client import Client

    return Client(app.url, verbose=False).view_api(return_format="dict", print_info=False)["named_endpoints"]


def test_every_endpoint_has_a_readme_row_and_every_row_an_endpoint(api):
    assert sorted(readme_rows()) == sorted(api)


def test_readme_names_every_parameter_in_order_and_which_are_optional(api):
    rows = readme_rows()
    for endpoint, info in api.items():
        inputs = rows[endpoint][0]
        required_part, _, optional_part = inputs.partition("optional")
        required = [p["parameter_name"] for p in info["parameters"] if not p["parameter_has_default"]]
        optional = [p["parameter_name"] for p in info["parameters"] if p["parameter_has_default"]]
        assert [n for n in named_in(required_part) if n in required] == required, endpoint
        assert [n for n in named_in(optional_part) if n in optional] == optional, endpoint
        assert not re.search(r"param_\d+|_value$", " ".join(required + optional)), endpoint


def test_outputs_have_meaningful_names_and_are_documented(api):
    rows = readme_rows()
    for endpoint, info in api.items():
        labels = [r.get("label") or "" for r in info["returns"]]
        assert not [label for label in labels if PLACEHOLDER.match(label)], endpoint
        for label in labels:
            if label not in NAMELESS:
                assert label.lower() in rows[endpoint][1].lower(), (endpoint, label)
