"""A shared app never reads or describes a server path: every endpoint, every string input, tried.

The app is `launch.py --host 0.0.0.0 --auth …` (requests go to 127.0.0.1, as gradio_client). For each
string input of each endpoint of `view_api()`, a real server path (the project folder, /etc) and a
path that does not exist get the same answer, apart from the path itself: the answer tells nothing
about what is on the server. The Model tab's own refusals are checked by message.
"""

import re
import uuid

import pytest
from gradio_client import Client

from conftest import ROOT, LaunchedApp

LOGIN = ("ana", "pw-for-ana")
SERVER_PATHS = [str(ROOT), "/etc", str(ROOT / "models" / "vlmchat-demo")]
STRING_TYPES = ("str", "Literal")
PROMPTS = {"prompt", "start"}  # text for the model: its answer may differ, but must still reveal nothing


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    app = LaunchedApp(tmp_path_factory.mktemp("shared"), "--auth", ":".join(LOGIN), host="0.0.0.0").wait_ready()
    client = Client(app.url, auth=LOGIN, verbose=False)
    yield app, client
    app.stop()


def _default(parameter):
    if parameter.get("parameter_has_default"):
        return parameter["parameter_default"]
    kind = parameter["python_type"]["type"]
    return {"str": "", "bool": False, "int": 0, "float": 0.0}.get(kind, None)


def _answer(client, endpoint, args) -> str:
    try:
        return repr(client.predict(*args, api_name=endpoint))
    except Exception as exc:  # the refusal or error a caller sees
        return f"{type(exc).__name__}: {exc}"


def _string_inputs(client):
    """(endpoint, index, arguments with defaults) for every string input of every endpoint."""
    for endpoint, info in client.view_api(return_format="dict", print_info=False)["named_endpoints"].items():
        defaults = [_default(p) for p in info["parameters"]]
        for index, parameter in enumerate(info["parameters"]):
            if parameter["python_type"]["type"].startswith(STRING_TYPES):
                yield endpoint, index, defaults, parameter.get("parameter_name") in PROMPTS


@pytest.mark.slow
def test_no_endpoint_tells_anything_about_a_server_path(shared):
    _, client = shared
    tried = set()
    for endpoint, index, defaults, prompt in _string_inputs(client):
        for real in SERVER_PATHS:
            fake = f"/nonexistent-{uuid.uuid4().hex[:8]}"
            answers = []
            for path in (real, fake):
                args = list(defaults)
                args[index] = path
                answer = _answer(client, endpoint, args).replace(path, "<path>")
                answers.append(re.sub(r"\d+(\.\d+)?", "N", answer))  # measured figures (free memory) vary
            assert prompt or answers[0] == answers[1], (endpoint, index, real, answers)
            assert str(ROOT) not in answers[0] and "root:" not in answers[0], (endpoint, answers[0])
        tried.add(endpoint)
    assert {"/preview_model", "/load_model", "/caption_batch", "/finetune_check", "/finetune_start",
            "/eval_start", "/activate_adapter"} <= tried


@pytest.mark.parametrize("folder", [str(ROOT / "models" / "vlmchat-demo"), str(ROOT), "~", "../models/vlmchat-demo"])
def test_the_model_tab_refuses_server_folders(shared, folder):
    _, client = shared
    files, plan = client.predict(folder, "", "auto", api_name="/preview_model")
    assert "reachable from other machines" in files and "hub id" in files and "files," not in files + plan
    with pytest.raises(Exception, match="reachable from other machines"):
        client.predict(folder, "", False, "auto", api_name="/load_model")


def test_the_model_tab_still_takes_the_demo_and_catalog(shared):
    _, client = shared
    files, plan = client.predict("demo", "", "auto", api_name="/preview_model")
    assert files.startswith("On the server:") and str(ROOT) not in files and "Plan" in plan
    files, _ = client.predict("smolvlm-256m", "", "auto", api_name="/preview_model")
    assert "reachable from other machines" not in files


def test_what_the_fine_tune_tab_shows_holds_no_server_path_while_shared(tmp_path):
    """The job's config, its command and the status line ("Adapter 'x' written to ...") name the app's folders
    relative to them while the app is reachable from other machines; locally they are unchanged."""
    from conftest import write_settings
    from vlmchat.settings import load_settings
    from vlmchat.ui.sharing import without_server_paths

    local = load_settings(write_settings(tmp_path))
    shared = local.override("server", host="0.0.0.0")
    adapters, outputs = local.paths.resolve("adapters"), local.paths.resolve("outputs")
    text = (f"Adapter 'x' written to {adapters}/x in 3s. --data {outputs}/finetune/uploads/users/ana-1/set "
            f'"adapters_dir": "{adapters}"')
    assert without_server_paths(local, text) == text
    shown = without_server_paths(shared, text)
    assert shown == ("Adapter 'x' written to adapters/x in 3s. --data outputs/finetune/uploads/users/ana-1/set "
                     '"adapters_dir": "adapters"')
    assert str(tmp_path) not in shown


def test_pictures_named_inside_an_uploaded_dataset_stay_inside_the_upload(shared, tmp_path):
    """A row's picture path reached anywhere on the server: a fine-tune check or an eval run made the model read and
    describe it (another login's pictures included), and 'not an image' vs 'not found' told which files exist."""
    import json
    import shutil
    import zipfile

    from gradio_client import handle_file

    _, client = shared
    folder = tmp_path / "ds"
    folder.mkdir()
    shutil.copy(ROOT / "examples" / "red-circle.png", folder / "inside.png")
    outside = [str(ROOT / "examples" / "red-circle.png"), "/nonexistent/x.png", "../../../../etc/passwd", "~/.bashrc"]
    rows = [{"messages": [{"role": "user", "content": "<image>Describe the image."},
                          {"role": "assistant", "content": "a red circle"}], "images": [path]}
            for path in ["inside.png", *outside]]
    (folder / "data.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    questions = [{"question": "What colour?", "options": ["red", "blue"], "answer": "red", "image": path}
                 for path in ["inside.png", *outside]]
    (folder / "quiz.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions), encoding="utf-8")
    archives = {}
    for name, kept in (("train", "data.jsonl"), ("quiz", "quiz.jsonl")):
        archives[name] = tmp_path / f"{name}.zip"
        with zipfile.ZipFile(archives[name], "w") as zipped:
            zipped.write(folder / kept, kept)
            zipped.write(folder / "inside.png", "inside.png")
    checked = client.predict(client.predict(handle_file(str(archives["train"])), api_name="/finetune_upload"),
                             api_name="/finetune_check")
    assert checked["samples"] == 1 and len(checked["problems"]) == 4
    said = {re.sub(r"picture '[^']*'", "picture P", p.split(": ", 1)[1]) for p in checked["problems"]}
    assert len(said) == 1 and "outside the uploaded dataset" in said.pop()  # the same whether the file exists
    started = client.predict(client.predict(handle_file(str(archives["quiz"])), api_name="/eval_upload"),
                             ["base"], "loglik", 0, api_name="/eval_start")
    assert (started["questions"], started["skipped_rows"]) == (1, 4)
