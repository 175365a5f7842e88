"""A shared app never reads or describes a server path: every endpoint, every string input, tried.

The app is `launch.py --host 0.0.0.0 --auth …` (requests go to 127.0.0.1, as gradio_client). For each
string input of each endpoint of `view_api()`, a real server path (the project folder, /etc) and a
path that does not exist get the same answer, apart from the path itself: the answer tells nothing
about what is on the server. The Model tab's own refusals are checked by message.
"""

import re
from pathlib import Path
import uuid

import pytest
from gradio_client import Client

from conftest import ROOT, SHARED_LOGIN, LaunchedApp

LOGIN = SHARED_LOGIN
SERVER_PATHS = [str(ROOT), "/etc", str(ROOT / "models" / "vlmchat-demo")]
STRING_TYPES = ("str", "Literal")
PROMPTS = {"prompt", "start"}  # text for the model: its answer may differ, but must still reveal nothing


@pytest.fixture(scope="module")
def shared(shared_app):
    """The session's `launch.py --host 0.0.0.0 --auth ana:pw-for-ana` (conftest.py) and a client logged in to it."""
    return shared_app, Client(shared_app.url, auth=LOGIN, verbose=False)


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
    assert plan == ""  # said once, under Files (it was under Plan too)
    with pytest.raises(Exception, match="reachable from other machines"):
        client.predict(folder, "", False, "auto", api_name="/load_model")


def test_the_model_tab_still_takes_the_demo_and_catalog(shared):
    _, client = shared
    files, plan = client.predict("demo", "", "auto", api_name="/preview_model")
    assert files.startswith("On the server:") and str(ROOT) not in files and "Plan" in plan
    files, _ = client.predict("smolvlm-256m", "", "auto", api_name="/preview_model")
    assert "reachable from other machines" not in files


def _zipped(target: Path, files: dict) -> Path:
    import zipfile

    with zipfile.ZipFile(target, "w") as zipped:
        for name, source in files.items():
            zipped.write(source, name)
    return target


def test_what_a_shared_app_answers_names_no_server_folder(shared, tmp_path):
    """A dataset checked, an adapter trained, an eval run and a caption batch, through the API of a shared app: the
    preview, the job's command and status, the eval's files and the caption table named the app's folders by their
    absolute paths; they are named relative to them (outputs/...), errors too. Files come back as downloads."""
    import json
    import shutil
    import tempfile
    import time

    from gradio_client import handle_file

    app, client = shared
    server_folders = [str(Path(app.log.name).parent), str(ROOT), str(Path(tempfile.gettempdir()) / "gradio")]
    pictures = {}
    for index, name in enumerate(["red-circle", "blue-square", "green-triangle", "yellow-circle"] * 3):
        pictures[f"p{index}.png"] = tmp_path / f"p{index}.png"
        shutil.copy(ROOT / "examples" / f"{name}.png", pictures[f"p{index}.png"])
    rows = [{"messages": [{"role": "user", "content": "<image>Describe the image."},
                          {"role": "assistant", "content": "a " + name.replace("-", " ")}], "images": [f"p{i}.png"]}
            for i, name in enumerate(["red-circle", "blue-square", "green-triangle", "yellow-circle"] * 3)]
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    (tmp_path / "quiz.jsonl").write_text(json.dumps({"question": "What colour is the shape?", "image": "p0.png",
                                                     "options": ["red", "blue"], "answer": "red"}) + "\n")
    answers = {}
    dataset = client.predict(handle_file(str(_zipped(tmp_path / "ds.zip", {**pictures, "data.jsonl":
                                                                            tmp_path / "data.jsonl"}))),
                             api_name="/finetune_upload")
    answers["check"] = client.predict(dataset, api_name="/finetune_check")
    answers["start"] = client.predict(dataset, "shared-paths", {"max_steps": 1}, True, api_name="/finetune_start")
    for _ in range(120):
        answers["status"] = client.predict(answers["start"]["job_id"], api_name="/finetune_status")
        if answers["status"]["state"] not in ("starting", "running"):
            break
        time.sleep(1)
    quiz = client.predict(handle_file(str(_zipped(tmp_path / "quiz.zip", {"quiz.jsonl": tmp_path / "quiz.jsonl",
                                                                          "p0.png": pictures["p0.png"]}))),
                          api_name="/eval_upload")
    run = client.predict(quiz, ["base"], "loglik", 0, api_name="/eval_start")["run_id"]
    for _ in range(60):
        answers["eval"] = client.predict(run, api_name="/eval_status")
        if answers["eval"]["state"] != "running":
            break
        time.sleep(0.5)
    # eval_status names its files as the server has them, which a client elsewhere cannot fetch: eval_files sends
    # them (the file route answered 403 even to the login that ran it: blind tester)
    fetched = client.predict(run, api_name="/eval_files")[0]
    assert "Is Correct" in Path(fetched).read_text(encoding="utf-8").splitlines()[0]
    answers["caption"] = client.predict("", [], handle_file(str(tmp_path / "quiz.zip")),
                                        api_name="/caption_batch")[:2]  # the third is the results zip, downloaded
    (tmp_path / "bad.jsonl").write_text(json.dumps({"question": "Colour?", "options": ["red"], "answer": "blue"}))
    with pytest.raises(Exception) as refused:  # "No usable questions in <the upload's file>"
        client.predict(client.predict(handle_file(str(tmp_path / "bad.jsonl")), api_name="/eval_upload"),
                       ["base"], "loglik", 0, api_name="/eval_start")
    answers["refused"] = str(refused.value)
    assert "No usable questions in outputs/" in answers["refused"]
    with pytest.raises(Exception) as failed:  # a handler whose only output is the model's own words (verbatim)
        client.predict(handle_file(str(pictures["p0.png"])), "", "nope", api_name="/caption")
    answers["caption refused"] = str(failed.value)
    assert "no adapter named 'nope'" in answers["caption refused"].lower(), answers["caption refused"]
    with pytest.raises(Exception) as failed:  # not a user error vlmchat knows: an OSError naming the job folder
        client.predict("j" * 300, api_name="/finetune_status")
    answers["unexpected"] = str(failed.value)
    assert "File name too long: 'outputs/finetune/" in answers["unexpected"], answers["unexpected"]
    assert answers["status"]["state"] == "done" and answers["eval"]["state"] == "done", answers
    assert answers["check"]["preview"][0]["images"][0].startswith("outputs/finetune/uploads/")
    shown_picture = answers["caption"][1]["data"][0][0]  # named as in the zip's folder, no server path at all
    assert shown_picture.startswith("quiz-") and shown_picture.endswith("/p0.png"), shown_picture
    assert "outputs/finetune/uploads/" in answers["start"]["command"]
    shown = json.dumps(answers)
    assert not [folder for folder in server_folders if folder in shown], shown


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


def test_the_filter_takes_every_shape_a_handler_answers_with(tmp_path):
    """One value, several, a dict keyed by component; strings inside updates, tables (DataFrame or headers/data)
    and lists; a path the caller typed stays as typed; a local app gets no filter at all."""
    import gradio as gr
    import pandas as pd

    from conftest import write_settings
    from vlmchat.settings import load_settings
    from vlmchat.ui.sharing import ShownOutside

    local = load_settings(write_settings(tmp_path))
    shared = local.override("server", host="0.0.0.0")
    outputs = local.paths.resolve("outputs")
    with gr.Blocks():
        note, table, picture, title = gr.Markdown(), gr.Dataframe(), gr.Image(), gr.Textbox()
    fn = type("Fn", (), {"outputs": [note, table, picture, title]})
    assert ShownOutside.of(local, fn, set()) is None
    shown = ShownOutside.of(shared, fn, {title._id}).for_call((f"{outputs}/typed.png",), {})
    result = shown((gr.update(value=f"Saved to {outputs}/a.csv", info=f"in {outputs}"),
                    pd.DataFrame({"image": [f"{outputs}/p.png"], "n": [1]}), f"{outputs}/p.png", f"{outputs}/t"))
    assert result[0]["value"] == "Saved to outputs/a.csv" and result[0]["info"] == "in outputs"
    assert result[1]["image"].tolist() == ["outputs/p.png"] and result[1]["n"].tolist() == [1]
    assert result[2:] == (f"{outputs}/p.png", f"{outputs}/t")  # a picture Gradio serves; an output that is an input
    assert shown({note: f"'{outputs}/typed.png' is not a dataset; see {outputs}/x"})[note] == \
        f"'{outputs}/typed.png' is not a dataset; see outputs/x"


def test_the_filter_cannot_be_turned_off_and_leaves_other_text_alone(tmp_path):
    """Shared-app reviewer: typing "/" (or "/tmp") in any field of an action left every path in its answer as it
    was, since a typed value was kept wherever it appeared; a URL or a longer name that contains a folder's path
    was rewritten ("https://example.com/tmp/a" -> "https://example.com<temp>/a"); "<temp>" vanished in Markdown."""
    import tempfile

    import gradio as gr

    from conftest import write_settings
    from vlmchat.settings import load_settings
    from vlmchat.ui.sharing import ShownOutside, shown_text

    shared = load_settings(write_settings(tmp_path)).override("server", host="0.0.0.0")
    outputs, temp = shared.paths.resolve("outputs"), tempfile.gettempdir()
    with gr.Blocks():
        note = gr.Markdown()
    fn = type("Fn", (), {"outputs": [note]})
    answer = f"{outputs}/captions/a.png, {temp}/b.png, https://example.com{temp}/c and {temp}files/d"
    expected = f"outputs/captions/a.png, $TMPDIR/b.png, https://example.com{temp}/c and {temp}files/d"
    for typed in ["/", temp, str(outputs)[:-3], "Describe the image."]:
        assert ShownOutside.of(shared, fn, set()).for_call((typed,), {})(answer) == expected, typed
    assert shown_text(shared, answer) == expected
    assert shown_text(shared.override("server", host="127.0.0.1"), answer) == answer  # locally as it is
    # A guess of a folder typed in one field does not keep the app's own mention of it (a yes/no answer to the
    # guess); only its echo, in quotes, is kept, also from inside a list (an eval's models).
    adapters = str(shared.paths.resolve("adapters"))
    guessed = ShownOutside.of(shared, fn, set()).for_call(("Describe it.", [adapters]), {})
    assert guessed(f"No adapter named 'nope' in {adapters}.") == "No adapter named 'nope' in adapters."
    assert guessed(f"'{adapters}' is not a valid adapter name") == f"'{adapters}' is not a valid adapter name"
    # The model's own words (Compare's answers, a caption, /chat) are shown as it wrote them, as Chat shows them.
    from vlmchat.ui.sharing import verbatim

    with gr.Blocks():
        said, told = verbatim(gr.Textbox()), gr.Markdown()
    both = ShownOutside.of(shared, type("Fn", (), {"outputs": [said, told]}), set()).for_call((), {})
    assert both((f"cd {temp}/b", f"in {temp}/b")) == (f"cd {temp}/b", "in $TMPDIR/b")


def test_a_filtered_stream_closed_by_its_reader_is_closed_at_once():
    """Chat saves a stopped answer when its stream is closed (Stop, a page gone); the shared app's filter sits
    between Gradio and that stream and must pass the close on, as `yield from` does."""
    from vlmchat.ui.errors import _wrap

    closed = []

    def answer():
        try:
            yield "a red"
            yield "a red circle"
        except GeneratorExit:
            closed.append("saved as stopped")
            raise

    class Shown:  # what sharing.ShownOutside does with a call, reduced to what this test looks at
        def for_call(self, args, kwargs):
            return lambda item: item.upper()

    import gc
    import inspect

    stream = _wrap(answer, shown=Shown())()
    assert next(stream) == "A RED"
    # Held elsewhere too (as a traceback or a framework may hold it), the stream is not closed by being let go.
    held = [o for o in gc.get_objects() if inspect.isgenerator(o) and o.gi_code is answer.__code__]
    stream.close()
    assert len(held) == 1 and closed == ["saved as stopped"]


def test_a_shared_page_offers_no_folder_of_the_server(shared):
    """Caption, Fine-tune and Evaluate hid their folder fields when shared; the Adapters tab still offered "Import
    from a folder on this computer" and the Model menu "or a local folder", each refused once tried."""
    _, client = shared
    shown = [c["props"].get("label") or "" for c in client.config["components"] if c["props"].get("visible", True)]
    assert [label for label in shown if "this computer" in label or "local folder" in label] == []
    assert "Import a zip" in shown
    # nothing given (as after an upload over the size limit): no advice to type a path, which is refused here
    with pytest.raises(Exception, match=r"Upload images or a zip first\.$"):
        client.predict("", [], None, api_name="/caption_batch")


@pytest.mark.slow
def test_a_model_started_from_a_folder_is_named_by_the_folders_name(tmp_path, picture_files):
    """`launch.py --model /a/folder` on a shared app showed that server path to every login: the status line and the
    Model menu (the page's config), /v1/models and every reply's `model`, "<path> answers only about a picture".
    It is named by the folder's name there now, and /v1 takes that name."""
    import json
    import shutil

    import openai
    from gradio_client import handle_file

    from test_openai_api import ask, data_url

    model = tmp_path / "private-models" / "my-shapes-model"
    shutil.copytree(ROOT / "models" / "vlmchat-demo", model)
    app = LaunchedApp(tmp_path, "--model", str(model), "--auth", ":".join(LOGIN), host="0.0.0.0",
                      env={"VLMCHAT_API_KEY": "sk-test-folder-model"}).wait_ready()
    try:
        client = Client(app.url, auth=LOGIN, verbose=False)
        seen = [json.dumps(client.config)]
        assert "`my-shapes-model` (LlavaForConditionalGeneration)" in seen[0]
        picture = picture_files[("red", "circle")]
        assert client.predict({"text": "Describe the image.", "files": [handle_file(str(picture))]},
                              api_name="/chat").strip() == "a red circle"
        # the Model menu's own entry, checked: it was refused as "a folder path on the server"
        files, plan = client.predict("my-shapes-model", "", "auto", api_name="/preview_model")
        assert files.startswith("On the server:") and "Plan" in plan, (files, plan)
        seen += [files, plan]
        fresh = Client(app.url, auth=LOGIN, verbose=False)  # a new chat: no picture seen before
        seen.append(str(fresh.predict({"text": "Describe the image.", "files": []}, api_name="/chat")))
        assert "my-shapes-model answers only about a picture" in seen[-1], seen[-1]
        keyed = openai.OpenAI(base_url=app.url + "v1", api_key="sk-test-folder-model", max_retries=0)
        listed = [found.id for found in keyed.models.list()]
        assert listed[0] == "my-shapes-model"
        for name in ("my-shapes-model", "base"):
            reply = keyed.chat.completions.create(model=name, messages=ask(data_url(picture)))
            assert (reply.model, reply.choices[0].message.content) == ("my-shapes-model", "a red circle")
            seen.append(reply.model_dump_json())
        seen.append(keyed.models.retrieve("base").model_dump_json())
        with pytest.raises(openai.NotFoundError) as refused:  # demo-es, made for 'demo': "the loaded model is ..."
            keyed.chat.completions.create(model="demo-es", messages=ask(data_url(picture)))
        seen.append(str(refused.value.body))
        assert "the loaded model is my-shapes-model" in seen[-1], seen[-1]
        assert not [text for text in seen if str(model.parent) in text]
    finally:
        app.stop()


def test_an_adapter_exported_from_a_shared_app_names_no_server_folder(tmp_path):
    """An adapter trained on a model started with `--model FOLDER`, exported from a shared app: its vlmchat.json,
    adapter_config.json and model card held the folder's path (verifying reviewer). Its text files name the model by
    the folder's name now; the weights go as they are, and locally nothing is rewritten."""
    import json
    import zipfile

    from conftest import write_settings
    from vlmchat.lora.store import export_zip
    from vlmchat.settings import load_settings
    from vlmchat.ui.sharing import shown_text

    model = tmp_path / "private" / "my-model"
    model.mkdir(parents=True)
    shared = load_settings(write_settings(tmp_path)).override("server", host="0.0.0.0").override("model", id=str(model))
    adapter = tmp_path / "adapters" / "x"
    adapter.mkdir(parents=True)
    (adapter / "vlmchat.json").write_text(json.dumps({"name": "x", "base_model": str(model),
                                                      "dataset": {"path": str(tmp_path / "data"), "format": "f"}}))
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(model)}))
    (adapter / "README.md").write_text(f"---\nbase_model: {model}\n---\n")
    (adapter / "adapter_model.safetensors").write_bytes(b"\x00weights")
    zipped = export_zip(tmp_path / "adapters", "x", tmp_path / "out", lambda text: shown_text(shared, text))
    with zipfile.ZipFile(zipped) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    assert not [name for name, data in files.items() if str(tmp_path).encode() in data], files
    assert json.loads(files["x/adapter_config.json"]) == {"base_model_name_or_path": "my-model"}
    assert json.loads(files["x/vlmchat.json"])["base_model"] == "my-model"
    assert files["x/adapter_model.safetensors"] == b"\x00weights"


def test_a_file_input_naming_a_server_path_gets_our_message_not_the_path(shared):
    """Gradio refuses a file input whose path was not uploaded with "Cannot move /srv/app/x.png to the gradio cache
    dir ...": a relative name told the app's own folder, an absolute one confirmed another login's upload (shared-app
    reviewer, the raw protocol)."""
    import httpx

    app, _ = shared
    with httpx.Client(base_url=app.url.rstrip("/"), timeout=120) as http:
        assert http.post("/login", data=dict(zip(("username", "password"), LOGIN))).status_code == 200
        for path in ("x.png", str(ROOT / "examples" / "red-circle.png")):
            started = http.post("/gradio_api/call/caption",
                                json={"data": [{"path": path, "meta": {"_type": "gradio.FileData"}}, "", "base"]})
            events = http.get(f"/gradio_api/call/caption/{started.json()['event_id']}").text
            assert "event: error" in events and "A file must be uploaded to this app first" in events, events
            assert str(ROOT) not in events and "gradio cache dir" not in events and str(Path.cwd()) not in events


def test_an_app_on_every_interface_says_the_address_others_use(shared):
    """It said "serving on http://localhost:PORT/" alone: the address other machines use was not shown."""
    app, _ = shared
    assert re.search(rf"serving on http://localhost:{app.port}/ \(other machines: http://[\d.]+:{app.port}/\)",
                     app.output()), app.output()
