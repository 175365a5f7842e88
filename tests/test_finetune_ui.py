"""The Fine-tune tab's wiring: API endpoints, dataset uploads, shared-app refusals, re-attaching to a job."""

import json
import zipfile

import gradio as gr
import pytest

from conftest import write_settings
from test_finetune_data import write_caption_folder
from vlmchat.errors import InputError
from vlmchat.finetune.progress import ProgressWriter
from vlmchat.finetune.spec import JobSpec
from vlmchat.finetune.uploads import resolve_dataset, store_upload
from vlmchat.models.manager import ModelManager
from vlmchat.settings import load_settings


@pytest.fixture()
def settings(tmp_path, demo_model_path):
    return load_settings(write_settings(tmp_path))


def test_the_app_exposes_the_finetune_endpoints(settings):
    from vlmchat.ui.app import build_app

    endpoints = build_app(ModelManager(settings), settings).get_api_info()["named_endpoints"]
    for name in ("finetune_upload", "finetune_check", "finetune_plan", "finetune_start", "finetune_status",
                 "finetune_cancel", "finetune_resume", "eval_upload", "eval_start", "eval_status", "eval_cancel"):
        assert f"/{name}" in endpoints
    start = [p["parameter_name"] for p in endpoints["/finetune_start"]["parameters"]]
    assert start == ["dataset", "name", "options", "overwrite"]


def test_a_zip_upload_is_unpacked_safely_and_checked(settings, tmp_path):
    from vlmchat.ui.finetune_tab import FinetuneActions

    folder = write_caption_folder(tmp_path / "mine", 3)
    archive = tmp_path / "mine.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for item in folder.iterdir():
            zipped.write(item, f"mine/{item.name}")
        zipped.writestr("../escape.txt", "no")
    # Refused with its reason, nothing written, as Caption refuses it (it was left out, and a zip holding only
    # such members read "holds no images" at the check).
    with pytest.raises(InputError, match=r"holds an unsafe member '\.\./escape\.txt'"):
        store_upload(archive, settings)
    assert not (settings.paths.resolve("outputs") / "finetune" / "escape.txt").exists()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zipped:  # a picture over server.max_upload_mb
        zipped.writestr("mine/huge.png", b"\0" * (settings.server.max_upload_mb * 2**20 + 1))
    with pytest.raises(InputError, match=r"holds the picture 'mine/huge.png' of .* over the 25.0 MiB limit"):
        store_upload(archive, settings)  # before it is unpacked: a 2 GiB one stayed on disk (blind tester)
    assert not list((settings.paths.resolve("outputs") / "finetune").rglob("huge.png"))
    with zipfile.ZipFile(archive, "w") as zipped:
        for item in folder.iterdir():
            zipped.write(item, f"mine/{item.name}")
        zipped.writestr("__MACOSX/mine/._0.png", "macOS metadata, left out")
    reference = store_upload(archive, settings)
    assert reference.startswith("upload:") and store_upload(archive, settings) == reference
    assert not list((settings.paths.resolve("outputs") / "finetune").rglob("__MACOSX"))
    assert resolve_dataset(reference, settings).name == "mine"
    with pytest.raises(InputError, match="Unknown upload ''"):  # it was the whole uploads folder, as one dataset
        resolve_dataset("upload:", settings)
    result = FinetuneActions(ModelManager(settings), settings).check(reference)
    assert (result["samples"], result["problems"]) == (3, [])
    assert result["preview"][0]["prompt"] == "Describe the image." and result["preview"][0]["answer"].startswith("un ")
    # The zip's path typed into the box (a local app), as the CLI takes it: unpacked as its upload was
    assert FinetuneActions(ModelManager(settings), settings).check(str(archive))["samples"] == 3


def test_files_picked_together_are_one_dataset_and_one_eval_set(settings, tmp_path):
    """What a person does in a file dialog: pick pictures with their .txt captions, or a .jsonl with its pictures."""
    from test_evaluate_app import write_colour_set

    from vlmchat.evaluate.sets import read_eval_set
    from vlmchat.ui.finetune_tab import FinetuneActions

    folder = write_caption_folder(tmp_path / "mine", 3)
    picked = sorted(folder.iterdir())
    reference = store_upload([str(p) for p in picked], settings)
    assert store_upload([str(p) for p in reversed(picked)], settings) == reference  # the same files, the same id
    # picked twice (Gradio's box adds a second pick to the first): the same dataset, not "both named 000.png"
    assert store_upload([str(p) for p in picked + picked], settings) == reference
    assert reference.startswith("upload:3-pictures-")  # what the Adapters tab shows it was trained on
    result = FinetuneActions(ModelManager(settings), settings).check(reference)
    assert (result["samples"], result["problems"]) == (3, [])

    data = write_colour_set(tmp_path / "colours", count=5)
    assert store_upload([data, data], settings) == store_upload(data, settings)  # one file picked twice: one file
    uploaded = store_upload([data, *sorted(data.parent.glob("*.png"))], settings)
    eval_set = read_eval_set(resolve_dataset(uploaded, settings))
    assert len(eval_set.items) == 5 and not eval_set.problems and eval_set.format == "vlmchat JSONL"

    other = tmp_path / "other"
    other.mkdir()
    (other / "00.png").write_bytes((folder / "000.png").read_bytes())
    with pytest.raises(InputError, match="both named 00.png"):
        store_upload([data, data.parent / "00.png", other / "00.png"], settings)
    script = tmp_path / "run.sh"
    script.write_text("echo", encoding="utf-8")
    with pytest.raises(InputError, match="run.sh: not part of a dataset"):
        store_upload([data, script], settings)


def test_a_shared_app_refuses_server_paths(tmp_path, demo_model_path):
    from vlmchat.ui.finetune_tab import FinetuneActions

    shared = load_settings(write_settings(tmp_path, host="0.0.0.0", auth="a:b"))
    actions = FinetuneActions(ModelManager(shared), shared)
    with pytest.raises(gr.Error, match="upload the files instead"):
        actions.dataset(None, "/etc")


def test_an_upload_and_a_typed_path_together_are_refused_saying_which_to_clear(settings, tmp_path):
    """The upload was trained on and the typed path ignored, unsaid (blind tester of the Evaluate tab, alike)."""
    from vlmchat.ui.finetune_tab import FinetuneActions

    folder = write_caption_folder(tmp_path / "captions", 2)
    with pytest.raises(gr.Error, match="A file is uploaded and a path is typed: clear the one not to use"):
        FinetuneActions(ModelManager(settings), settings).dataset([str(folder / "0.png")], str(folder))


def test_status_reattaches_to_the_newest_job_and_plots_its_curves(settings):
    from vlmchat.ui.finetune_tab import FinetuneActions, _curves, _status_markdown

    actions = FinetuneActions(ModelManager(settings), settings)
    assert actions.status()["state"] == "none"
    job = actions.jobs / "mine-20250101-000000"
    job.mkdir(parents=True)
    (job / "job.json").write_text(JobSpec(name="mine", data="d").to_json())
    emit = ProgressWriter(job / "progress.jsonl")
    emit("start", step=0, total_steps=4, setup={"device": "CPU"})
    for step, loss in ((1, 2.0), (2, 1.5)):
        emit("step", step=step, loss=loss, samples_per_s=10.0, eta_s=5.0, memory_gib=0.5)
    emit("eval", step=2, eval_loss=1.7)
    emit("done", step=2, adapter="mine", metrics={"steps": 2}, message="Adapter 'mine' written.")
    status = actions.status()  # no job id: what a reloaded page asks for
    assert (status["job_id"], status["state"], status["step"]) == (job.name, "done", 2)
    assert "eval loss 1.7000" in _status_markdown(status) and "Adapter 'mine' written." in _status_markdown(status)
    frame = _curves(status)
    assert sorted(set(frame["series"])) == ["eval loss", "train loss"] and len(frame.dropna()) == 3
    # both series from the first frame on, as points without a loss: the plot keeps the colours of its first frame
    empty = _curves({})
    assert list(empty["series"]) == ["train loss", "eval loss"] and empty["loss"].isna().all()
    assert str(frame["step"].dtype) == "int64" and str(frame["loss"].dtype) == "float64"  # a numeric axis
    with pytest.raises(gr.Error, match="No fine-tune is running: .* has finished"):
        actions.cancel()
    with pytest.raises(InputError, match="has finished .*nothing to resume"):
        actions.resume(job.name)
    with pytest.raises(gr.Error, match="no fine-tune job"):
        actions.status("../etc")


def test_start_refuses_bad_names_and_existing_adapters_before_any_process(settings, tmp_path):
    from vlmchat.ui.finetune_tab import FinetuneActions

    actions = FinetuneActions(ModelManager(settings), settings)
    data = str(write_caption_folder(tmp_path / "d", 2))
    (settings.paths.resolve("adapters") / "taken").mkdir(parents=True)
    for name, message in (("bad/name", "not a valid adapter name"), ("taken", "already exists")):
        with pytest.raises(Exception, match=message):
            actions.start(data, name, {"max_steps": 1})
    with pytest.raises(Exception, match="Every sample is longer than max_length 30 tokens"):  # the CLI's refusal
        actions.start(data, "short", {"max_steps": 1, "max_length": 30})
    assert not actions.jobs.exists() or not any(actions.jobs.iterdir())
    # An option that is no [finetune] setting is refused, by name: "max_step" (a typo) ran a full default run,
    # and "adapters_dir" is never a client's (adapters go to the configured folder).
    for wrong in ({"max_step": 5}, {"r": 4, "adapters_dir": "/elsewhere"}):
        with pytest.raises(gr.Error, match=f"Unknown option '{[k for k in wrong if k != 'r'][0]}'; the options are "
                                           r"the \[finetune\] settings: .*max_steps"):
            actions.spec(data, "fresh", wrong, False)
    with pytest.raises(gr.Error, match="options must be a JSON object"):  # was Python's own ValueError text
        actions.spec(data, "fresh", "max_steps=5", False)
    spec = actions.spec(data, "fresh", {"r": 4, "image_detail": "low"}, False)
    assert spec.r == 4 and spec.adapters_dir == str(settings.paths.resolve("adapters"))
    assert json.loads(spec.to_json())["model"] == "demo"


def test_the_plan_before_start_shows_steps_time_memory_and_warns_about_too_little_training(settings, tmp_path):
    from vlmchat.ui.finetune_tab import FinetuneActions, _plan_markdown

    actions = FinetuneActions(ModelManager(settings), settings)
    data = str(write_caption_folder(tmp_path / "d", 80))
    plan = actions.plan(data, {})
    assert (plan["train_samples"], plan["val_samples"]) == (64, 16)
    assert plan["steps"] >= 150 and plan["effective_batch"] == 4 and plan["learning_rate"] == 1e-3  # demo recipe
    assert plan["minutes"] > 0 and plan["peak_gib"] > 0 and not plan["warning"]
    assert "vlmchat_recipe.json" in plan["reasons"]["learning_rate"]
    short = actions.plan(data, {"epochs": 1, "batch_size": 4, "grad_accumulation": 4})
    assert short["steps"] == 4 and "too little training" in short["warning"]
    assert "⚠️" in _plan_markdown(short) and "4 optimizer steps" in _plan_markdown(short)
    # what comes after training (the tab did not say; fine-tune reviewer)
    assert "then base vs the new adapter on the 16 validation samples, for a verdict" in _plan_markdown(plan)
    few = actions.plan(str(write_caption_folder(tmp_path / "few", 20)), {})
    assert "no verdict afterwards: 4 validation samples, a comparison with the base needs 6" in _plan_markdown(few)
    assert actions.plan(data, {"preset": "thorough"})["steps"] > plan["steps"]
    # rows of two pictures for the demo, which reads one picture per chat: the adapter answered one picture with ""
    folder = tmp_path / "d"
    pictures = sorted(folder.glob("*.png"))
    rows = [{"messages": [{"role": "user", "content": "<image><image>Describe the two images."},
                          {"role": "assistant", "content": "dos formas"}],
             "images": [pictures[i].name, pictures[i + 1].name]} for i in range(0, 40, 2)]
    (folder / "two.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    assert "20 sample(s) hold several pictures, but this model reads one picture per chat" in \
        actions.plan(str(folder / "two.jsonl"), {})["warning"]


def test_a_slow_run_shows_seconds_per_sample_not_zero_samples_per_second():
    """A real-size model on a CPU takes ~80 s a sample: '0.0 samples/s' told the user nothing."""
    from vlmchat.finetune.progress import JobStatus
    from vlmchat.ui.finetune_tab import _status_markdown

    slow = JobStatus(job_id="j", state="running", step=1, total_steps=2, samples_per_s=0.01245)
    assert "80.3 s/sample" in slow.line()
    assert "80.3 s/sample" in _status_markdown({"job_id": "j", "state": "running", "step": 1, "total_steps": 2,
                                                "samples_per_s": 0.01245})
    assert "12.5 samples/s" in JobStatus(state="running", samples_per_s=12.5).line()


def test_the_tab_chooses_the_image_detail_the_plan_counts(settings, tmp_path):
    """The Fine-tune tab has Chat's Image detail choice (default [generation] image_detail); the plan counts the
    pictures' tokens at the chosen detail (a tiny Idefics3: one tile at low, 5 at high)."""
    from families import save_family
    from vlmchat.ui.app import build_app
    from vlmchat.ui.finetune_tab import FinetuneActions

    high = settings.override("generation", image_detail="high")
    radios = [block for block in build_app(ModelManager(high), high).blocks.values()
              if isinstance(block, gr.Radio) and str(block.label).startswith("Image detail — ")]
    assert len(radios) == 1 and radios[0].value == "high"  # Chat's own choice is labelled "Image detail"
    assert [choice[0] for choice in radios[0].choices] == ["low", "auto", "high"]

    folder = save_family("idefics3", tmp_path / "idefics3").path
    tiny = settings.override("model", id=str(folder))
    actions = FinetuneActions(ModelManager(tiny), tiny)
    data = str(write_caption_folder(tmp_path / "d", 24))
    low, high = (actions.plan(data, {"image_detail": detail}) for detail in ("low", "high"))
    assert "at low image detail" in low["minutes_how"] and "at high image detail" in high["minutes_how"]
    tokens = [int(plan["minutes_how"].split("counted: ")[1].split()[0]) for plan in (low, high)]
    assert tokens[1] > tokens[0] > 0


def test_a_problem_quoting_an_image_placeholder_is_shown_as_text():
    """The tab's markdown took `<image>` for an HTML tag: 'data.json:212: 2 placeholders but …' lost its key word."""
    from vlmchat.ui.finetune_tab import _check_result

    text, _ = _check_result({"format": "LLaVA-Instruct JSON", "samples": 55, "preview": [],
                             "problems": ["data.json:212: 2 <image> placeholders but 1 image in 'image'"]})
    assert "2 &lt;image&gt; placeholders" in text and "<image>" not in text


def test_a_page_opened_after_a_run_gets_its_dataset_and_adapter_name_back(settings, tmp_path):
    """A reload after a Cancel gave an empty form: Start said "Upload a dataset", so starting afresh meant uploading
    the same files again (UI tester). The page opens with the newest run's dataset, and its name while no adapter
    of that name was written."""
    from vlmchat.finetune import runner
    from vlmchat.finetune.spec import JOB_FILE
    from vlmchat.ui.finetune_tab import FinetuneActions

    actions = FinetuneActions(ModelManager(settings), settings)
    assert actions.last_form(None) == ("", "")
    folder = write_caption_folder(tmp_path / "mine", 3)
    reference = store_upload([str(p) for p in sorted(folder.iterdir())], settings)

    def ran(data: str, name: str, stamp: str) -> None:
        job = runner.jobs_folder(settings) / f"{name}-{stamp}"
        job.mkdir(parents=True)
        (job / JOB_FILE).write_text(actions.spec(data, name, {}, False).to_json(), encoding="utf-8")

    ran(reference, "mine", "20261204-100000")
    assert actions.last_form(None) == (reference, "mine")
    assert actions.check(actions.last_form(None)[0])["samples"] == 3  # Start takes it as it took the upload
    (settings.paths.resolve("adapters") / "mine").mkdir(parents=True)
    assert actions.last_form(None) == (reference, "")  # written: Start would refuse the name
    ran(str(folder), "typed", "20261204-110000")  # a folder typed on this computer comes back as typed
    assert actions.last_form(None) == (str(folder), "typed")
