"""Captioning from the outside: `launch.py caption` exit codes, and the Caption endpoints of the launched app."""

import functools
import json
import os
import time
import subprocess
import sys
import shutil
import zipfile
from pathlib import Path

import pytest
from gradio_client import Client, handle_file
from PIL import Image

from conftest import ROOT, SHARED_LOGIN, CliSession, write_settings


def _cli(tmp_path, *args, session=None):
    env = dict(os.environ, VLMCHAT_NO_BOOTSTRAP="1")
    settings = write_settings(tmp_path)
    if session is not None:
        return session.run("--settings", settings, "caption", *args, timeout=180)
    return subprocess.run([sys.executable, "launch.py", "--settings", str(settings), "caption", *map(str, args)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)


@pytest.fixture
def small_folder(tmp_path, picture_files):
    folder = tmp_path / "set"
    folder.mkdir()
    for (colour, shape), path in list(picture_files.items())[:3]:
        Image.open(path).save(folder / f"{colour}-{shape}.png")
    return folder


def test_cli_exit_codes(tmp_path, small_folder):
    with CliSession(tmp_path / "cli") as session:  # one Python start for the six runs
        _cli_exit_codes(tmp_path, small_folder, functools.partial(_cli, tmp_path, session=session))


def _cli_exit_codes(tmp_path, small_folder, cli):
    done = cli(small_folder, "--batch-size", "2", "--prefix", "ohwx, ", "--suffix", ".")
    assert done.returncode == 0, done.stderr
    assert "3 captioned, 0 skipped, 0 failed" in done.stdout
    for image in small_folder.glob("*.png"):  # a LoRA trigger word before every caption, as written
        colour, shape = image.stem.split("-")
        assert image.with_suffix(".txt").read_text() == f"ohwx, a {colour} {shape}."
    (small_folder / "broken.png").write_text("not a picture")
    failed = cli(small_folder, "--format", "jsonl")
    assert failed.returncode == 1
    assert "broken.png" in failed.stderr and "not an image" in failed.stderr
    # the captioned pictures keep their .txt captions in the file (they were captioned anew, the .txt left out)
    assert "0 captioned, 3 skipped, 1 failed" in failed.stdout
    rows = [json.loads(line) for line in (small_folder / "captions.jsonl").read_text().splitlines()]
    assert {row["image"]: row["caption"] for row in rows} == {
        image.name: image.with_suffix(".txt").read_text() for image in small_folder.glob("*.png") if image.stem != "broken"}
    table = cli(small_folder, "--output", tmp_path / "out" / "all.csv")  # the format from the name
    assert table.returncode == 1 and len((tmp_path / "out" / "all.csv").read_text().splitlines()) == 4
    skipped = cli(small_folder / "red-circle.png", small_folder / "green-circle.png")
    assert skipped.returncode == 0 and "0 captioned, 2 skipped, 0 failed" in skipped.stdout
    wrong = cli(small_folder, "--batch-size", "abc")
    assert wrong.returncode == 2 and "must be 'auto' or a whole number (got 'abc')" in wrong.stderr
    import zipfile

    with zipfile.ZipFile(tmp_path / "pack.zip", "w") as zipped:
        zipped.write(small_folder / "red-circle.png", "red-circle.png")
    packed = cli(tmp_path / "pack.zip")  # the terminal says where the .txt went
    assert packed.returncode == 0 and "beside them in" in packed.stdout and "unpacked" in packed.stdout


@pytest.mark.parametrize("args, message", [
    (["does-not-exist"], "does not exist"),
    (["{folder}", "--output", "x.txt"], "--output is for jsonl/csv"),
    (["{folder}", "--batch-size", "0"], "caption.batch_size must be between 1 and 256"),
])
def test_cli_user_mistakes_exit_2_with_one_line(tmp_path, small_folder, args, message):
    result = _cli(tmp_path, *[a.format(folder=small_folder) for a in args])
    assert result.returncode == 2 and message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture
def client(app):
    return Client(app.url, verbose=False)


@pytest.mark.parametrize("key", [("red", "circle"), ("green", "square")])
def test_caption_endpoint(client, picture_files, key):
    path = picture_files[key]
    assert client.predict(handle_file(str(path)), "", "base", api_name="/caption") == f"a {key[0]} {key[1]}"
    assert client.predict(handle_file(str(path)), "What color is the shape?", "", api_name="/caption") == key[0]


def test_an_api_call_naming_no_adapter_captions_with_the_active_one(app, picture_files, small_folder):
    """With demo-es activated, /caption without an adapter answered from the base model: its default was the menu's
    value when the app was built, 'base' (API tester). README: a call naming no adapter uses the active one."""
    picture = handle_file(str(picture_files[("red", "circle")]))
    Client(app.url, verbose=False).predict("demo-es", api_name="/activate_adapter")
    try:
        client = Client(app.url, verbose=False)
        assert client.predict(picture, api_name="/caption") == "un círculo rojo"
        assert client.predict(picture, "", "base", api_name="/caption") == "a red circle"
        _, table, _ = client.predict(files=[handle_file(str(p)) for p in sorted(small_folder.glob("*.png"))],
                                     api_name="/caption_batch")
        assert all(row[2].startswith("un ") for row in table["data"]), table
    finally:
        Client(app.url, verbose=False).predict("base", api_name="/activate_adapter")

def test_caption_endpoint_unknown_adapter_says_so(client, picture_files):
    with pytest.raises(Exception, match="no adapter named 'nope'"):
        client.predict(handle_file(str(picture_files[("red", "circle")])), "", "nope", api_name="/caption")


def _batch(client, folder="", files=None, archive=None, fmt="txt", prefix="", suffix=""):
    return client.predict(folder, files, archive, "", "", "base", fmt, False, False, "auto", prefix, suffix,
                          api_name="/caption_batch")


def test_nothing_given_says_what_to_give(client):
    with pytest.raises(Exception, match=r"Upload images or a zip, or give the path of a folder\."):
        _batch(client)


def test_a_file_of_a_type_the_batch_does_not_take_is_one_line_on_the_terminal(client, app, tmp_path):
    """A zip given as `files` got Gradio's message, and the server's terminal a traceback (blind tester)."""
    import zipfile

    archive = tmp_path / "pictures.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("a.txt", "x")
    with pytest.raises(Exception, match="Invalid file type"):
        _batch(client, files=[handle_file(str(archive))])
    logged = app.output()
    assert "vlmchat: input: Invalid file type" in logged and "gradio.exceptions.Error" not in logged


def test_batch_endpoint_with_a_local_folder_and_with_uploads(client, app, small_folder):
    # a relative path was read from the app's folder (captions written into its examples/); quotes were "not found"
    with pytest.raises(Exception, match=r"Give the folder's full path \('examples' is not one\)"):
        _batch(client, folder="examples")
    line, table, results = _batch(client, folder=f'"{small_folder}"')
    assert line.startswith("3 captioned") and len(table["data"]) == 3
    assert sorted(row[0] for row in table["data"]) == sorted(p.name for p in small_folder.glob("*.png"))
    runs = Path(app.log.name).parent / "outputs" / "captions"  # a folder run left an empty run folder each time
    assert not [folder for folder in runs.rglob("*") if folder.is_dir() and not any(folder.iterdir())]
    with zipfile.ZipFile(results) as zf:
        assert sorted(zf.namelist()) == sorted(p.with_suffix(".txt").name for p in small_folder.glob("*.png"))
    uploads = [handle_file(str(p)) for p in sorted(small_folder.glob("*.png"))]
    line, table, results = _batch(client, files=uploads, fmt="csv")
    assert line.startswith("3 captioned")
    # named as uploaded, not by their copies' full paths in the app's outputs (the reasons ran off the table)
    assert sorted(row[0] for row in table["data"]) == sorted(p.name for p in small_folder.glob("*.png"))
    with zipfile.ZipFile(results) as zf:  # a dataset: the images and the CSV naming them
        assert "captions.csv" in zf.namelist() and len([n for n in zf.namelist() if n.endswith(".png")]) == 3


def test_files_picked_twice_are_captioned_once_and_a_namesake_with_other_bytes_is_kept(client, small_folder, tmp_path):
    """Gradio's upload box adds files picked again to those it holds (also to a pick it refused for a .pdf), and
    every picture was captioned twice: "4 captioned, 2 skipped, 3 failed of 9" for 5 pictures (UI tester)."""
    pictures = sorted(small_folder.glob("*.png"))
    other = tmp_path / "other"
    other.mkdir()
    namesake = other / pictures[0].name  # another picture of the same name
    shutil.copyfile(pictures[1], namesake)
    given = [*pictures, *pictures, namesake]
    line, table, results = _batch(client, files=[handle_file(str(p)) for p in given], fmt="csv")
    assert line.startswith("4 captioned") and len(table["data"]) == 4, line
    with zipfile.ZipFile(results) as zipped:
        assert len([n for n in zipped.namelist() if n.endswith(".png")]) == 4

def test_a_zip_uploaded_again_goes_on_where_its_last_run_stopped_and_keeps_its_own_captions(client, small_folder,
                                                                                          tmp_path):
    """Each tab run unpacked a zip into a new folder, so the same zip again (after a Cancel) captioned everything
    again; and a caption in the zip was replaced in the results (browser reviewer)."""
    pictures = sorted(small_folder.glob("*.png"))
    archive = tmp_path / "set.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for picture in pictures:
            zipped.write(picture, f"pics/{picture.name}")
        zipped.writestr(f"pics/{pictures[0].stem}.txt", "MY OWN CAPTION")
    line, _, results = _batch(client, archive=handle_file(str(archive)))
    assert line.startswith("2 captioned, 1 skipped"), line
    with zipfile.ZipFile(results) as zipped:
        mine = next(name for name in zipped.namelist() if name.endswith(f"{pictures[0].stem}.txt"))
        assert zipped.read(mine) == b"MY OWN CAPTION" and len([n for n in zipped.namelist() if n.endswith(".txt")]) == 3
    line, _, _ = _batch(client, archive=handle_file(str(archive)))
    assert line.startswith("0 captioned, 3 skipped"), line


def test_uploaded_pictures_bring_their_captions_along(client, small_folder, tmp_path):
    """"Upload images" refused .txt files, so pictures that had captions were captioned again (caption reviewer)."""
    pictures = sorted(small_folder.glob("*.png"))
    mine = tmp_path / f"{pictures[0].stem}.txt"
    mine.write_text("MY OWN CAPTION")
    kohya = tmp_path / f"{pictures[1].stem}.caption"
    kohya.write_text("KOHYA CAPTION")
    line, _, results = _batch(client, files=[handle_file(str(p)) for p in [*pictures, mine, kohya]], prefix="ohwx, ")
    assert line.startswith("1 captioned, 2 skipped"), line
    with zipfile.ZipFile(results) as zipped:  # the dataset: every picture, with the captions it came with
        assert zipped.read(next(n for n in zipped.namelist() if n.endswith(mine.name))) == b"MY OWN CAPTION"
        new = next(n for n in zipped.namelist() if n.endswith(f"{pictures[2].stem}.txt"))
        assert zipped.read(new).decode() == "ohwx, a " + pictures[2].stem.replace("-", " ")  # the prefix as written
        assert len([n for n in zipped.namelist() if n.endswith(".png")]) == 3
    with pytest.raises(Exception, match="The uploads are captions only: upload the pictures with them"):
        _batch(client, files=[handle_file(str(mine))])
    # a zip left in its box from the last run was captioned with the folder typed next (caption reviewer)
    archive = tmp_path / "last.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.write(pictures[0], pictures[0].name)
    with pytest.raises(Exception, match="Give one of a folder, uploaded images or a zip, not a folder and a zip"):
        _batch(client, folder=str(small_folder), archive=handle_file(str(archive)))


@pytest.mark.slow
def test_a_zip_larger_than_a_picture_may_be_is_taken_and_a_picture_that_large_is_not(client, small_folder, tmp_path):
    """Gradio's one cap was server.max_upload_mb (25 MB) for every file: a dataset or pictures zip over it was refused
    before vlmchat saw it. Any upload now goes up to server.max_batch_upload_mb; a picture is still held to 25 MB,
    with a message naming the setting."""
    import os

    archive = tmp_path / "photos.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zipped:
        for picture in sorted(small_folder.glob("*.png")):
            zipped.write(picture, f"photos/{picture.name}")
        zipped.writestr("photos/raw-scan.bin", os.urandom(26 * 2**20))  # what a zip of phone photos weighs
    assert archive.stat().st_size > 26 * 2**20
    line, table, _ = _batch(client, archive=handle_file(str(archive)))
    assert line.startswith("3 captioned"), line
    big = tmp_path / "big.png"
    big.write_bytes(b"\x89PNG" + bytes(26 * 2**20))
    with pytest.raises(Exception, match=r"over the 25 MB limit; resize it or raise server.max_upload_mb"):
        client.predict(handle_file(str(big)), "", "base", api_name="/caption")


def test_folder_paths_are_refused_when_others_can_reach_the_app(shared_app, small_folder):
    client = Client(shared_app.url, auth=SHARED_LOGIN, verbose=False)  # the session's app on 0.0.0.0 (conftest.py)
    with pytest.raises(Exception, match="reachable from other machines"):
        _batch(client, folder=str(small_folder))
    assert not list(small_folder.glob("*.txt"))
    archive = small_folder.parent / "set.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for image in small_folder.glob("*.png"):
            zf.write(image, image.name)
    line, _, results = _batch(client, archive=handle_file(str(archive)))
    assert line.startswith("3 captioned") and results


def test_cancel_through_the_api_keeps_what_is_done(client, tmp_path):
    from vlmchat.demo.heldout import heldout_pictures

    for index, (image, _, _) in enumerate(heldout_pictures(60, seed=5)):
        image.save(tmp_path / f"{index:02d}.png")
    job = client.submit(str(tmp_path), None, None, "", "", "base", "txt", False, False, "2",
                        api_name="/caption_batch")
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob("*.txt")) and time.monotonic() < deadline:
        time.sleep(0.05)
    # another page (its tab closed, or a second one) cancels it: it said "Nothing is running." and the run went on
    other_page = Client(client.src, verbose=False)
    assert "Cancelling the run started from another page" in other_page.predict(api_name="/caption_cancel")
    line = job.result(timeout=60)[0]
    written = len(list(tmp_path.glob("*.txt")))
    assert "cancelled" in line and 0 < written < 60 and line.startswith(f"{written} captioned")


def test_a_folder_with_a_name_that_is_not_utf8_gets_its_summary_and_zip(manager, demo_settings, small_folder):
    """caf\\xe9.png (Latin-1, an old Windows copy) made /caption_batch fail with "surrogates not allowed" even in txt
    mode: no summary table, no zip (blind tester)."""
    from vlmchat.ui.caption_tab import CaptionActions

    odd = small_folder / os.fsdecode(b"caf\xe9.png")
    next(small_folder.glob("*.png")).rename(odd)
    line, rows, results = CaptionActions(manager, demo_settings).caption_batch(
        folder=str(small_folder), format="txt", progress=lambda *a, **k: None)
    assert "3 captioned" in line and odd.with_suffix(".txt").is_file()
    assert any(row[0].startswith("caf\\xe9.png (name not UTF-8") for row in rows)
    assert "caf\\xe9.txt" in zipfile.ZipFile(results).namelist()


def test_caption_starts_with_the_active_adapter_and_base_stays_choosable(manager, demo_settings, picture_files):
    """/activate_adapter demo-es changed Chat only: /caption with no adapter and the tab's Model menu stayed on the
    base (blind tester)."""
    from vlmchat.ui.caption_tab import CaptionActions

    picture = str(picture_files[("red", "circle")])
    actions = CaptionActions(manager, demo_settings)
    assert actions.chosen() == "base"
    manager.attach_named_adapter("demo-es")
    manager.activate_adapter("demo-es")
    try:
        assert actions.chosen() == "demo-es"  # the menu's value when a page loads
        assert actions.caption(picture, "", "") == "un círculo rojo"
        assert actions.caption(picture, "", "base") == "a red circle"
    finally:
        manager.activate_adapter(None)


@pytest.mark.parametrize("flags, settings_adapter, expected", [
    ([], "demo-es", "demo-es"), ([], "", None), (["--adapter", "base"], "demo-es", "base"),
    (["--adapter", "x"], "", "x"), (["--endpoint", "e"], "demo-es", "endpoint:e")])
def test_the_caption_command_takes_the_adapter_of_the_settings(tmp_path, flags, settings_adapter, expected):
    """`launch.py caption` ignored [model] adapter, which the app starts with (and the global --adapter sets)."""
    from vlmchat.cli import apply_flags, build_parser, caption_choice

    settings = write_settings(tmp_path)
    settings.write_text(settings.read_text() + f'[model]\nadapter = "{settings_adapter}"\n')
    args = build_parser().parse_args(["--settings", str(settings), "caption", "x", *flags])
    assert caption_choice(args, apply_flags(args)) == expected
