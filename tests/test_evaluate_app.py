"""The Evaluate tab's API against a launched app: base vs demo-es on an eval set with images, a verdict, files."""

import csv
import json
import time
import zipfile
from pathlib import Path

import pytest
from gradio_client import Client, handle_file

COLOURS = ("red", "green", "blue", "yellow")


def write_colour_set(folder, count=24):
    """vlmchat JSONL rows: 'What color is the shape?' with the four colours as options, one picture each."""
    from vlmchat.demo.heldout import heldout_pictures

    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for index, (image, colour, shape) in enumerate(heldout_pictures(count, seed=21)):
        image.save(folder / f"{index:02d}.png")
        rows.append({"question": "What color is the shape?", "options": list(COLOURS), "answer": colour,
                     "image": f"{index:02d}.png", "subject": shape})
    (folder / "colours.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return folder / "colours.jsonl"


def wait_done(client, run_id, timeout=180):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.predict(run_id, api_name="/eval_status")
        if status["state"] != "running":
            return status
        time.sleep(0.5)
    raise TimeoutError(status)


@pytest.fixture(scope="module")
def client(app):
    return Client(app.url, verbose=False)


def test_base_vs_adapter_gives_accuracy_intervals_a_verdict_and_the_csv(client, tmp_path):
    data = write_colour_set(tmp_path / "set")
    started = client.predict(str(data), ["base", "demo-es"], "loglik", 0, api_name="/eval_start")
    assert started["format"].startswith("vlmchat") and started["questions"] == 24
    status = wait_done(client, started["run_id"])
    assert status["state"] == "done", status
    rows = {row[0]: row for row in status["table"]["data"]}
    assert set(rows) == {"base", "demo-es"}
    assert rows["base"][1] >= 85 and rows["base"][4] == 24
    assert any("demo-es" in v and "McNemar" in v for v in status["verdicts"])
    assert {row[0] for row in status["subjects"]} <= {"circle", "square", "triangle"}
    with open(status["csv"], newline="", encoding="utf-8") as handle:
        header = next(csv.reader(handle))
    for column in ("Question", "Generated Answer", "Correct Answer", "Is Correct", "Response Time (s)", "model"):
        assert column in header
    # the files downloaded to the client, for one that cannot read the server's folders (blind tester)
    fetched, chart, summary = client.predict(started["run_id"], api_name="/eval_files")
    assert Path(fetched).read_bytes() == Path(status["csv"]).read_bytes() and Path(chart).suffix == ".png"
    assert json.loads(Path(summary).read_text())["models"].keys() == {"base", "demo-es"}


def test_a_run_that_scores_no_question_has_failed(client, tmp_path):
    """Text-only rows for the demo, which answers only about a picture: the CLI exits 2, /eval_status said "done"
    (blind tester)."""
    rows = [{"question": f"Which colour is number {i}?", "options": list(COLOURS), "answer": "red"} for i in range(3)]
    data = tmp_path / "text.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    status = wait_done(client, client.predict(str(data), ["base"], "loglik", 0, api_name="/eval_start")["run_id"])
    assert status["state"] == "failed" and "No question was scored" in status["message"], status


def test_both_methods_through_the_api_with_the_write_ups_generate_setting(client, tmp_path):
    data = write_colour_set(tmp_path / "set", count=8)
    started = client.predict(str(data), ["base"], "loglik,generate", 0, "", 5, 1, api_name="/eval_start")
    assert started["method"] == "loglik+generate"
    status = wait_done(client, started["run_id"])
    assert [row[0] for row in status["table"]["data"]] == ["base · loglik", "base · generate"]
    assert [row[4] for row in status["table"]["data"]] == [8, 8]
    comparison, = status["verdicts"]
    assert comparison.startswith("base by generate: ") and "vs loglik" in comparison and "ms a question)" in comparison
    assert "--num-beams 5" in status["command"] and "--max-new-tokens 1" in status["command"]
    with pytest.raises(Exception, match="num beams must be between 1 and 16"):  # ran greedy instead (reviewer)
        client.predict(str(data), ["base"], "generate", 0, "", 0, 1, api_name="/eval_start")


def test_a_client_that_started_nothing_neither_follows_nor_cancels_anothers_run(client, app, tmp_path):
    """'' is the newest run of the caller: a client that started none cancelled another client's run (reviewer)."""
    data = write_colour_set(tmp_path / "set", count=8)
    run_id = client.predict(str(data), ["base"], "loglik", 0, api_name="/eval_start")["run_id"]
    stranger = Client(app.url, verbose=False)
    for endpoint in ("/eval_status", "/eval_cancel"):
        with pytest.raises(Exception, match="This page or client has started no evaluation"):
            stranger.predict("", api_name=endpoint)
    assert client.predict("", api_name="/eval_status")["run_id"] == run_id  # its own newest
    assert wait_done(client, run_id)["state"] == "done"

def test_an_uploaded_zip_with_images_runs(client, tmp_path):
    data = write_colour_set(tmp_path / "set", count=8)
    archive = tmp_path / "colours.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for file in data.parent.iterdir():
            zipped.write(file, file.name)
    reference = client.predict(handle_file(str(archive)), api_name="/eval_upload")
    assert reference.startswith("upload:")
    status = wait_done(client, client.predict(reference, ["base"], "loglik", 0, api_name="/eval_start")["run_id"])
    assert status["state"] == "done" and status["table"]["data"][0][4] == 8
    # The zip's path typed into the box, as the CLI takes it: unpacked as its upload is (it was "neither a folder
    # nor a .jsonl/.csv/.parquet file", blind tester)
    started = client.predict(str(archive), ["base"], "loglik", 0, api_name="/eval_start")
    assert started["questions"] == 8
    status = wait_done(client, started["run_id"])
    assert status["state"] == "done" and status["table"]["data"][0][4] == 8


def test_an_unknown_adapter_is_refused_with_a_message(client, tmp_path):
    data = write_colour_set(tmp_path / "set", count=4)
    with pytest.raises(Exception, match="nope"):
        client.predict(str(data), ["base", "nope"], "loglik", 0, api_name="/eval_start")


def test_image_detail_is_taken_and_a_wrong_one_says_which_are_allowed(client, tmp_path):
    import os

    data = write_colour_set(tmp_path / "set", count=4)
    with pytest.raises(Exception, match="low, auto or high"):
        client.predict(str(data), ["base"], "loglik", 0, "ultra", api_name="/eval_start")
    status = wait_done(client, client.predict(str(data), ["base"], "loglik", 0, "low", api_name="/eval_start")["run_id"])
    assert status["state"] == "done", status
    summary = json.loads(open(os.path.join(os.path.dirname(status["csv"]), "summary.json")).read())
    # the demo sees every picture at one size: the run says so instead of claiming low
    assert summary["config"]["image_detail"] == "high" and "changes nothing" in summary["config"]["image_detail_reason"]


def test_an_eval_set_picked_with_its_pictures_finds_them_without_their_folder(tmp_path):
    """A browser's file picker sends the .jsonl and its pictures without the rows' img/ folder (the tab keeps them
    together as one upload): each picture is found by its file name beside the set."""
    from vlmchat.evaluate.sets import read_eval_set
    from vlmchat.finetune.uploads import resolve_dataset, store_upload
    from vlmchat.settings import Settings

    data = write_colour_set(tmp_path / "set", count=6)
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    data.write_text("\n".join(json.dumps(dict(row, image="img/" + row["image"])) for row in rows), encoding="utf-8")
    files = [data, *sorted(data.parent.glob("*.png"))]
    reference = store_upload(files, Settings(), tmp_path / "uploads")
    result = read_eval_set(resolve_dataset(reference, Settings(), tmp_path / "uploads"))
    assert len(result.items) == 6 and result.problems == []


def test_a_picture_uploaded_as_an_eval_set_says_what_an_eval_set_upload_is(client, tmp_path, picture_files):
    with pytest.raises(Exception, match=r"is not an eval-set upload; upload a .zip \(the set's file and its pictures"):
        client.predict(handle_file(str(picture_files[("red", "circle")])), api_name="/eval_upload")  # a dataset's


def test_two_uploads_with_the_same_name_stem_and_bytes_stay_two(client, tmp_path):
    """empty.jsonl then empty.csv (both empty): the message names the file just uploaded."""
    for name in ("empty.jsonl", "empty.csv"):
        (tmp_path / name).write_text("", encoding="utf-8")
        reference = client.predict(handle_file(str(tmp_path / name)), api_name="/eval_upload")
        with pytest.raises(Exception, match=f"'{name}' is empty"):
            client.predict(reference, ["base"], "loglik", 0, api_name="/eval_start")


def test_no_model_ticked_is_refused_not_run_as_the_base(client, tmp_path):
    """Every box unticked in the tab ran the base (a model shown as unticked), then said 'tick the base and an
    adapter for a verdict' (closed-loop reviewer)."""
    data = write_colour_set(tmp_path / "set", count=2)
    with pytest.raises(Exception, match="No model is ticked: tick the base, an adapter or an endpoint"):
        client.predict(str(data), [], "loglik", 0, api_name="/eval_start")


@pytest.mark.parametrize("limit, beams, said", [(2.5, 1, "item limit must be a whole number"),
                                                (0, 0, "num beams must be between 1 and 16")])
def test_a_count_that_is_not_a_whole_number_in_range_is_refused(client, tmp_path, limit, beams, said):
    """2.5 questions ran 2, and 0 beams ran greedy, unsaid (blind tester)."""
    data = write_colour_set(tmp_path / "set", count=2)
    with pytest.raises(Exception, match=said):
        client.predict(str(data), ["base"], "generate", limit, "", beams, 0, api_name="/eval_start")
