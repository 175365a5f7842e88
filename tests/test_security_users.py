"""Two logins on one app: each one's uploads, jobs, eval runs and caption results are theirs alone.

The app is `launch.py --auth-file` with the logins ana and bob, reached from 127.0.0.1 by
gradio_client and plain HTTP (httpx) with each one's login cookie. Locally (no login) nothing
changes: tests/test_finetune_ui.py and tests/test_evaluate_app.py keep the old folders.
"""

import json
import time
import zipfile
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from gradio_client import Client, handle_file

from conftest import ROOT, LaunchedApp
from test_evaluate_app import write_colour_set
from vlmchat.finetune.progress import ProgressWriter
from vlmchat.finetune.spec import JobSpec
from vlmchat.ui.users import user_folder

ANA, BOB = ("ana", "pw-ana-1"), ("bob", "pw-bob-2")


@pytest.fixture(scope="module")
def two_logins(tmp_path_factory):
    folder = tmp_path_factory.mktemp("users")
    logins = folder / "logins.txt"
    logins.write_text("\n".join(":".join(login) for login in (ANA, BOB)) + "\n")
    app = LaunchedApp(folder, "--auth-file", str(logins)).wait_ready()
    clients = {login[0]: Client(app.url, auth=login, verbose=False) for login in (ANA, BOB)}
    yield app, folder / "outputs", clients
    app.stop()


def _http(app, login) -> httpx.Client:
    client = httpx.Client(base_url=app.url, timeout=30)
    assert client.post("/login", data={"username": login[0], "password": login[1]}).status_code == 200
    return client


def _eval_upload(client, tmp_path) -> str:
    data = write_colour_set(tmp_path / "set", count=4)
    archive = tmp_path / "set.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for file in data.parent.iterdir():
            zipped.write(file, file.name)
    return client.predict(handle_file(str(archive)), api_name="/eval_upload")


def test_with_logins_an_endpoint_is_added_in_settings_only(two_logins):
    """An endpoint added in the Model tab is the app's: ana's, with her key, answered bob (API reviewer). With
    logins the form refuses, as on an exposed app; settings.toml's endpoints are whoever runs the app's."""
    app, _, clients = two_logins
    with pytest.raises(Exception, match="With logins, an endpoint added here would serve every login"):
        clients["ana"].predict("anas", app.url + "v1", "demo", "sk-ANA", 0, 0, 4, False, api_name="/add_endpoint")


def test_an_upload_is_found_only_by_its_owner(two_logins, tmp_path):
    _, outputs, clients = two_logins
    reference = _eval_upload(clients["ana"], tmp_path)
    with pytest.raises(Exception, match="colours.jsonl is in no layout"):  # found and read: an eval set, not training
        clients["ana"].predict(reference, api_name="/finetune_check")
    with pytest.raises(Exception, match="Unknown upload"):
        clients["bob"].predict(reference, api_name="/finetune_check")
    with pytest.raises(Exception, match="Unknown upload"):
        clients["bob"].predict(reference, ["base"], "loglik", 0, api_name="/eval_start")
    uploads = outputs / "finetune" / "uploads"
    assert not (uploads / reference.removeprefix("upload:")).exists()  # not in the shared folder
    assert len(list((uploads / "users").glob(f"ana-*/{reference.removeprefix('upload:')}"))) == 1
    # the same file uploaded by bob gets an id of its own: an adapter's notes name the upload it was trained on, and
    # an equal id told another login which file that was (shared-app reviewer)
    archive = handle_file(str(tmp_path / "set.zip"))  # the very bytes ana uploaded
    assert clients["bob"].predict(archive, api_name="/eval_upload") != reference
    assert clients["ana"].predict(archive, api_name="/eval_upload") == reference  # the owner's: the same one


def test_an_eval_run_and_its_files_are_its_owners(two_logins, tmp_path):
    app, outputs, clients = two_logins
    reference = _eval_upload(clients["ana"], tmp_path)
    run_id = clients["ana"].predict(reference, ["base"], "loglik", 0, api_name="/eval_start")["run_id"]
    with pytest.raises(Exception, match="There is no evaluation run"):
        clients["bob"].predict(run_id, api_name="/eval_status")
    with pytest.raises(Exception, match="There is no evaluation run"):
        clients["bob"].predict(run_id, api_name="/eval_cancel")
    with pytest.raises(Exception, match="This page or client has started no evaluation"):  # not "run ''"
        clients["bob"].predict("", api_name="/eval_status")  # bob has none; ana's newest is not his
    deadline = time.monotonic() + 120
    while (status := clients["ana"].predict(run_id, api_name="/eval_status"))["state"] == "running":
        assert time.monotonic() < deadline
        time.sleep(0.5)
    assert status["state"] == "done" and "/eval/users/ana-" in status["csv"]
    url = f"/gradio_api/file={status['csv']}"
    assert _http(app, ANA).get(url).status_code == 200
    assert _http(app, BOB).get(url).status_code == 403
    assert _http(app, BOB).get(f"/gradio_api/file={Path(status['csv']).parent}/../{run_id}/results.csv").status_code \
        == 403


def test_a_finetune_job_and_its_log_are_its_owners(two_logins):
    app, outputs, clients = two_logins
    job = user_folder(outputs / "finetune", SimpleNamespace(username="ana")) / "mine-20250101-000000"
    job.mkdir(parents=True)  # a finished job, as the runner leaves it
    (job / "job.json").write_text(JobSpec(name="mine", data="d").to_json())
    (job / "log.txt").write_text("ana's training log\n")
    emit = ProgressWriter(job / "progress.jsonl")
    emit("start", step=0, total_steps=2, setup={"device": "CPU"})
    emit("done", step=2, adapter="mine", metrics={"steps": 2}, message="Adapter 'mine' written.")
    assert clients["ana"].predict(job.name, api_name="/finetune_status")["state"] == "done"
    assert clients["ana"].predict("", api_name="/finetune_status")["job_id"] == job.name
    with pytest.raises(Exception, match="There is no fine-tune job"):
        clients["bob"].predict(job.name, api_name="/finetune_status")
    with pytest.raises(Exception, match="There is no fine-tune job"):
        clients["bob"].predict(job.name, api_name="/finetune_resume")
    assert clients["bob"].predict("", api_name="/finetune_status")["state"] == "none"
    assert _http(app, BOB).get(f"/gradio_api/file={job / 'log.txt'}").status_code == 403
    assert _http(app, ANA).get(f"/gradio_api/file={job / 'log.txt'}").text == "ana's training log\n"


def test_while_one_logins_fine_tune_runs_another_is_told_how_far_it_is(two_logins, picture_files, tmp_path):
    """One fine-tune runs at a time; bob was told only 'Another user's fine-tune is running', with nothing to say
    whether to wait a minute or an hour. The running job is a stand-in: a process whose command line names
    vlmchat.finetune (a real one would finish before bob asks), with the events a job writes."""
    import subprocess
    import sys

    app, outputs, clients = two_logins
    job = user_folder(outputs / "finetune", SimpleNamespace(username="ana")) / "secret-name-20250101-000001"
    job.mkdir(parents=True)
    (job / "job.json").write_text(JobSpec(name="secret-name", data="d").to_json())
    emit = ProgressWriter(job / "progress.jsonl")
    emit("start", step=0, total_steps=40, setup={"device": "CPU"})
    emit("step", step=12, total_steps=40, loss=1.5, samples_per_s=2.0, eta_s=150.0)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "vlmchat.finetune"])
    try:
        (job / "pid").write_text(json.dumps({"pid": child.pid}))
        folder = tmp_path / "mine"
        folder.mkdir()
        for index, ((colour, shape), picture) in enumerate(picture_files.items()):
            (folder / f"{index}.png").write_bytes(picture.read_bytes())
            (folder / f"{index}.txt").write_text(f"a {colour} {shape}")
        archive = tmp_path / "mine.zip"
        with zipfile.ZipFile(archive, "w") as zipped:
            for file in folder.iterdir():
                zipped.write(file, file.name)
        dataset = clients["bob"].predict(handle_file(str(archive)), api_name="/finetune_upload")
        with pytest.raises(Exception) as refused:
            clients["bob"].predict(dataset, "bobs", {"max_steps": 1}, False, api_name="/finetune_start")
        said = str(refused.value)
        assert "Another user's fine-tune is running (step 12 of 40, about 2m30s left)" in said, said
        assert "secret-name" not in said and "ana" not in said
    finally:
        child.kill()
        child.wait()


def test_caption_results_are_their_owners(two_logins, picture_files):
    app, outputs, clients = two_logins
    files = [handle_file(str(path)) for path in list(picture_files.values())[:2]]
    summary, _, results = clients["ana"].predict("", files, None, "", "", "base", "jsonl", False, False, "auto",
                                                 api_name="/caption_batch")
    assert "2 captioned" in summary
    (archive,) = (outputs / "captions" / "users").glob("ana-*/*.zip")
    assert not list((outputs / "captions").glob("*.zip"))
    assert _http(app, ANA).get(f"/gradio_api/file={archive}").status_code == 200
    assert _http(app, BOB).get(f"/gradio_api/file={archive}").status_code == 403
    captions = json.loads(zipfile.ZipFile(results).read("captions.jsonl").splitlines()[0])
    assert captions["caption"].startswith("a ")


def test_a_picture_in_gradios_cache_is_read_only_by_the_login_it_was_shown_to(two_logins, picture_files):
    """Gradio keeps uploads (and files an answer shows, e.g. a chat export) in one cache folder for everyone;
    another login that is handed such a URL gets 403, the owner 200."""
    app, _, _ = two_logins
    ana, bob = _http(app, ANA), _http(app, BOB)
    picture = next(iter(picture_files.values()))
    with open(picture, "rb") as handle:
        uploaded = ana.post("/gradio_api/upload", files={"files": ("ana_secret.png", handle, "image/png")})
    assert uploaded.status_code == 200, uploaded.text
    path = uploaded.json()[0]
    assert ana.get(f"/gradio_api/file={path}").status_code == 200
    refused = bob.get(f"/gradio_api/file={path}")
    assert refused.status_code == 403 and "another user" in refused.text


def test_a_login_renames_and_deletes_its_own_adapter_in_the_adapters_tab(two_logins):
    """The tab's Rename and Delete got no login (their handlers' signatures were hidden by a wrapper), so ana's own
    adapter read as "trained by another login" for ana too (shared-app reviewer). Through the app: bob is refused,
    ana renames and deletes it."""
    import shutil

    app, outputs, clients = two_logins
    adapters = Path(app.log.name).parent / "adapters"
    shutil.copytree(adapters / "demo-es", adapters / "ana-own")
    meta_file = adapters / "ana-own" / "vlmchat.json"
    upload = user_folder(outputs / "finetune" / "uploads", SimpleNamespace(username="ana")) / "set-1a2b3c" / "set"
    meta = {**json.loads(meta_file.read_text()), "dataset": {"name": "set", "path": str(upload)}}
    meta_file.write_text(json.dumps(meta))

    def adapters_tab(client, action: str, *args) -> str:
        """The Adapters tab's button (an undocumented endpoint; the Chat tab's action of that name comes first)."""
        for name in (f"/{action}", f"/{action}_1"):
            answer = client.predict(*args, api_name=name)
            if len(answer) == 3:  # [table, choice, message]
                return answer[-1]
        raise AssertionError(f"no Adapters tab {action}")

    said = adapters_tab(clients["bob"], "rename", "ana-own", "bobs-now")
    assert "was trained by another login" in said and (adapters / "ana-own").is_dir()
    said = adapters_tab(clients["bob"], "delete", "ana-own", "ana-own")
    assert "was trained by another login" in said and (adapters / "ana-own").is_dir()
    said = adapters_tab(clients["ana"], "rename", "ana-own", "ana-renamed")
    assert "Renamed to 'ana-renamed'" in said and (adapters / "ana-renamed").is_dir(), said
    said = adapters_tab(clients["ana"], "delete", "ana-renamed", "ana-renamed")
    assert not (adapters / "ana-renamed").exists(), said


def test_an_adapter_trained_on_a_logins_upload_is_renamed_deleted_exported_or_replaced_by_that_login_only(tmp_path):
    """bob replaced ana's adapter by a fine-tune with overwrite, renamed and deleted it in the Adapters tab, and
    exported her weights (reviewer, two logins). Requests stand in as objects carrying the login's user name."""
    import shutil

    from vlmchat.errors import InputError
    from vlmchat.ui.users import refuse_anothers_adapter, user_folder

    ana, bob = SimpleNamespace(username="ana"), SimpleNamespace(username="bob")
    adapters = tmp_path / "adapters"
    shutil.copytree(ROOT / "adapters" / "demo-es", adapters / "demo-es")
    shutil.copytree(ROOT / "adapters" / "demo-es", adapters / "ana-style")
    meta_file = adapters / "ana-style" / "vlmchat.json"
    meta = json.loads(meta_file.read_text(encoding="utf-8"))
    upload = user_folder(tmp_path / "outputs" / "finetune" / "uploads", ana) / "set-1a2b3c" / "set"
    meta["dataset"] = {**(meta.get("dataset") or {}), "name": "set", "path": str(upload)}
    meta_file.write_text(json.dumps(meta), encoding="utf-8")
    for doing in ("rename", "delete", "export", "replace"):
        with pytest.raises(InputError, match=f"'ana-style' was trained by another login; only that login can {doing}"):
            refuse_anothers_adapter(adapters, "ana-style", bob, doing)
        refuse_anothers_adapter(adapters, "ana-style", ana, doing)  # hers
        if doing != "replace":
            refuse_anothers_adapter(adapters, "demo-es", bob, doing)  # trained from no login's upload: everyone's
    # ...but trained again by a login, it would become that login's alone (verifying reviewer: ana retrained demo-es
    # with overwrite, and bob was then refused it)
    with pytest.raises(InputError, match="'demo-es' is shared by everyone on this app; a login can replace only"):
        refuse_anothers_adapter(adapters, "demo-es", bob, "replace")
    refuse_anothers_adapter(adapters, "demo-es", SimpleNamespace(username=None), "replace")  # no logins: as before


def test_an_imported_adapter_is_the_importers_whatever_its_files_say(tmp_path):
    """Ownership came from the dataset path in the adapter's own vlmchat.json: bob imported a zip naming ana's
    upload folder (or a copy of ana's adapter) and could then neither rename nor delete it, while ana could (blind
    tester). An import now records its importer, and drops the path."""
    import shutil

    from vlmchat.errors import InputError
    from vlmchat.lora.store import export_zip, import_folder, import_zip, read_adapter
    from vlmchat.ui.users import refuse_anothers_adapter, user_folder

    ana, bob = SimpleNamespace(username="ana"), SimpleNamespace(username="bob")
    forged = tmp_path / "forged"
    shutil.copytree(ROOT / "adapters" / "demo-es", forged)
    meta = json.loads((forged / "vlmchat.json").read_text(encoding="utf-8"))
    upload = user_folder(tmp_path / "outputs" / "finetune" / "uploads", ana) / "set-1a2b3c" / "set"
    meta.update(dataset={"name": "set", "path": str(upload)}, imported_by=user_folder(Path("."), ana).name)
    (forged / "vlmchat.json").write_text(json.dumps(meta), encoding="utf-8")
    with zipfile.ZipFile(tmp_path / "forged.zip", "w") as zipped:
        for file in forged.iterdir():
            zipped.write(file, f"forged/{file.name}")
    adapters = tmp_path / "adapters"
    bobs = user_folder(Path("."), bob).name
    assert import_zip(tmp_path / "forged.zip", adapters, "from-zip", bobs).owner == bobs
    import_folder(forged, adapters, "from-folder", bobs)
    import_folder(forged, adapters, "everyones")  # imported without a login: everyone's
    for name in ("from-zip", "from-folder"):
        assert "path" not in read_adapter(adapters / name).dataset  # the trainer's folders are not kept
        with pytest.raises(InputError, match=f"'{name}' was trained by another login; only that login can delete"):
            refuse_anothers_adapter(adapters, name, ana, "delete")
        refuse_anothers_adapter(adapters, name, bob, "delete")
    for login in (ana, bob):
        refuse_anothers_adapter(adapters, "everyones", login, "rename")
    with zipfile.ZipFile(export_zip(adapters, "from-zip", tmp_path / "out")) as zipped:  # bob's folder name stays
        assert "imported_by" not in json.loads(zipped.read("from-zip/vlmchat.json"))


def test_an_exposed_app_never_remembers_a_visitors_hugging_face_token():
    """Load with "Remember this token" (shown, and taken by /load_model) wrote a visitor's token into the server
    account's ~/.cache/huggingface/token. The token is still used for that download."""
    import dataclasses

    import gradio as gr

    from vlmchat.settings import DEMO_MODEL_ID, Settings
    from vlmchat.ui.model_tab import build_model_tab, load_model

    settings = dataclasses.replace(Settings(), server=dataclasses.replace(Settings().server, share=True))
    asked = {}
    manager = SimpleNamespace(settings=settings, info=None,
                              load=lambda *args, **kwargs: asked.update(kwargs) or SimpleNamespace(summary=lambda: "x"))
    said = load_model(manager, DEMO_MODEL_ID, "hf_visitor", True, "auto")
    assert asked["remember"] is False and asked["token"] == "hf_visitor" and "not remembered" in said
    with gr.Blocks() as page:
        build_model_tab(manager, settings, gr.Markdown(), lambda manager: "")
    remember = [block for block in page.blocks.values()
                if isinstance(block, gr.Checkbox) and block.label.startswith("Remember this token")]
    assert len(remember) == 1 and remember[0].visible is False
