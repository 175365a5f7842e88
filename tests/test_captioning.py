"""Batch captioning with the shipped demo model: outputs, skip/overwrite, races, bad files, cancel, zips."""

import csv
import os
import json
import struct
import threading
import zipfile
import zlib

import pytest
from PIL import Image

from vlmchat.caption.io import caption_path, find_images, write_text_atomic
from vlmchat.caption.run import PRESETS, CaptionOptions, caption_image, caption_images, with_start
from vlmchat.demo.heldout import heldout_pictures
from vlmchat.errors import InputError, SettingsError
from vlmchat.settings import load_settings


@pytest.fixture
def shapes(tmp_path):
    """A folder of 12 held-out pictures (PNG and JPEG) and the right caption of each."""
    folder = tmp_path / "shapes"
    folder.mkdir()
    truth = {}
    for index, (image, colour, shape) in enumerate(heldout_pictures(12, seed=21)):
        path = folder / f"{index:02d}.{'png' if index % 2 else 'jpg'}"
        image.save(path)
        truth[path] = f"a {colour} {shape}"
    return folder, truth


def _captions(truth):
    return {path: caption_path(path).read_text(encoding="utf-8") for path in truth if caption_path(path).exists()}


def test_a_folder_gets_a_right_txt_beside_each_image(manager, shapes):
    folder, truth = shapes
    summary = caption_images(manager, find_images([folder]).images, CaptionOptions(batch_size=5))
    assert (len(summary.captioned), summary.skipped, summary.failed) == (12, [], [])
    captions = _captions(truth)
    assert sum(captions[path] == right for path, right in truth.items()) >= 11  # demo model: ~97% held-out
    # the folder is a fine-tune dataset: every image has a same-name .txt holding just the caption
    assert sorted(p.stem for p in folder.glob("*.txt")) == sorted(p.stem for p in truth)
    assert not list(folder.glob(".*"))  # no temp files left behind


def test_batched_captions_equal_one_at_a_time(manager, shapes):
    folder, truth = shapes
    paths = sorted(truth)[:6]
    alone = [caption_image(manager, path) for path in paths]
    caption_images(manager, paths, CaptionOptions(batch_size=6))
    assert [caption_path(path).read_text() for path in paths] == alone


def test_existing_captions_are_skipped_unless_overwrite(manager, shapes):
    folder, truth = shapes
    first = sorted(truth)[0]
    caption_path(first).write_text("my own caption")
    summary = caption_images(manager, sorted(truth), CaptionOptions(batch_size=8))
    assert [image for image, _ in summary.skipped] == [str(first)] and len(summary.captioned) == 11
    assert caption_path(first).read_text() == "my own caption"
    again = caption_images(manager, sorted(truth), CaptionOptions(batch_size=8))
    assert len(again.skipped) == 12 and not again.captioned
    replaced = caption_images(manager, [first], CaptionOptions(overwrite=True))
    assert len(replaced.captioned) == 1 and caption_path(first).read_text() == truth[first]


def test_an_empty_txt_is_no_caption(manager, shapes):
    """TagGUI and kohya read an empty .txt as an image with no tags: it is captioned, not skipped."""
    folder, truth = shapes
    first = sorted(truth)[0]
    caption_path(first).write_text("  \n")
    summary = caption_images(manager, [first], CaptionOptions())
    assert len(summary.captioned) == 1 and caption_path(first).read_text() == truth[first]


def test_a_kohya_caption_file_counts_as_a_caption(manager, shapes):
    """kohya's `.caption` sidecar (read by the fine-tune reader too) was not seen: a .txt was written beside it and the
    picture had two captions (caption reviewer)."""
    folder, truth = shapes
    first = sorted(truth)[0]
    first.with_suffix(".caption").write_text("my own caption")
    summary = caption_images(manager, [first], CaptionOptions())
    assert [image for image, _ in summary.skipped] == [str(first)] and not first.with_suffix(".txt").exists()
    # --overwrite replaces that file, in place (a new .txt beside it left the old text for kohya; verifying reviewer)
    replaced = caption_images(manager, [first], CaptionOptions(overwrite=True))
    assert len(replaced.captioned) == 1 and first.with_suffix(".caption").read_text() == truth[first]
    assert not first.with_suffix(".txt").exists()
    # a caption file named in upper case is the picture's caption too (it was captioned again, a.txt beside a.TXT)
    second = sorted(truth)[1]
    second.with_suffix(".TXT").write_text("MINE")
    assert caption_images(manager, [second], CaptionOptions()).skipped and caption_path(second).name.endswith(".TXT")
    assert sorted(p.name for p in folder.iterdir() if p.stem == second.stem) == sorted([second.name, second.stem + ".TXT"])


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_a_caption_file_that_cannot_be_written_or_read_is_said_before_captioning(manager, shapes, tmp_path, fmt):
    """An --output that is a folder, or in a folder that cannot be made, is refused before any image is captioned
    (the captions live in memory until the file is written); a file with a BOM (Excel's "CSV UTF-8") is read;
    one in another encoding is a clear message, not a UnicodeDecodeError."""
    folder, truth = shapes
    with pytest.raises(InputError, match="is a folder; give a file name"):
        caption_images(manager, sorted(truth), CaptionOptions(fmt=fmt, output=tmp_path))
    (tmp_path / "file").write_text("")
    with pytest.raises(InputError, match="its folder cannot be made"):
        caption_images(manager, sorted(truth), CaptionOptions(fmt=fmt, output=tmp_path / "file" / f"c.{fmt}"))
    output = folder / f"captions.{fmt}"
    first = sorted(truth)[0]
    mine = (json.dumps({"image": first.name, "caption": "MINE"}) + "\n" if fmt == "jsonl"
            else f"image,caption\r\n{first.name},MINE\r\n")
    output.write_bytes(b"\xef\xbb\xbf" + mine.encode("utf-8"))
    summary = caption_images(manager, sorted(truth), CaptionOptions(fmt=fmt, output=output))
    assert [image for image, _ in summary.skipped] == [str(first)] and len(summary.captioned) == 11
    output.write_bytes(mine.replace("MINE", "tri\u00e1ngulo").encode("cp1252"))
    with pytest.raises(InputError, match="is not UTF-8 text"):
        caption_images(manager, sorted(truth), CaptionOptions(fmt=fmt, output=output))



@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_a_caption_file_keeps_its_rows_order_and_other_columns(manager, shapes, fmt):
    """A CSV's other columns and a JSONL's other fields were dropped from every row, and a one-line file (a note,
    a header of other columns) was replaced whole (newcomer reviewer)."""
    folder, truth = shapes
    output = folder / f"captions.{fmt}"
    second, first = sorted(truth)[:2]
    mine = ("".join(json.dumps({"image": p.name, "caption": "MINE", "rating": 5}) + "\n" for p in (first, second))
            if fmt == "jsonl" else f"image,rating,caption\n{first.name},5,MINE\n{second.name},5,MINE\n")
    output.write_text(mine, encoding="utf-8")
    summary = caption_images(manager, sorted(truth), CaptionOptions(fmt=fmt, output=output))
    assert len(summary.captioned) == 10 and output.read_text(encoding="utf-8").startswith(mine)
    rows = ([json.loads(line) for line in output.read_text().splitlines()] if fmt == "jsonl"
            else list(csv.DictReader(output.open(encoding="utf-8"))))
    assert [row["image"] for row in rows[2:]] == sorted(p.name for p in sorted(truth)[2:])  # new rows after, sorted
    caption_images(manager, [second], CaptionOptions(fmt=fmt, output=output, overwrite=True))
    replaced = output.read_text(encoding="utf-8")
    assert replaced.count("MINE") == 1 and replaced.count("5") >= 2  # the caption replaced, the rating kept
    output.write_text("my notes\n", encoding="utf-8")
    with pytest.raises(InputError, match="is not a caption"):
        caption_images(manager, sorted(truth), CaptionOptions(fmt=fmt, output=output))
    assert output.read_text(encoding="utf-8") == "my notes\n"


def test_a_caption_that_appears_during_the_run_is_not_replaced(manager, shapes):
    folder, truth = shapes

    def someone_else_writes(progress):
        if progress.done == 4:  # after the first batch: every image without a caption gets one from elsewhere
            for path in truth:
                if not caption_path(path).exists():
                    caption_path(path).write_text("written by another program")

    summary = caption_images(manager, sorted(truth), CaptionOptions(batch_size=4), progress=someone_else_writes)
    assert len(summary.captioned) == 4 and len(summary.skipped) == 8
    assert all("appeared while the batch ran" in reason for _, reason in summary.skipped)
    assert sum(text == "written by another program" for text in _captions(truth).values()) == 8


def test_atomic_write_never_replaces_unless_asked(tmp_path):
    target = tmp_path / "a.txt"
    assert write_text_atomic(target, "first", overwrite=False)
    assert not write_text_atomic(target, "second", overwrite=False)
    assert target.read_text() == "first"
    assert write_text_atomic(target, "third", overwrite=True) and target.read_text() == "third"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def _huge_png(path, side=20000):
    """A valid PNG header claiming side x side pixels (a decompression bomb), a few bytes on disk."""
    Image.new("RGB", (8, 8), "white").save(path)
    data = bytearray(path.read_bytes())
    data[16:24] = struct.pack(">II", side, side)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))


def test_bad_files_are_reported_one_by_one_and_the_rest_are_captioned(manager, shapes):
    folder, truth = shapes
    (folder / "notes.png").write_text("this is text, not a picture")
    (folder / "empty.jpg").write_bytes(b"")
    Image.new("RGB", (64, 64), (255, 0, 0)).save(folder / "cut.png")
    (folder / "cut.png").write_bytes((folder / "cut.png").read_bytes()[:80])
    _huge_png(folder / "huge.png")
    gone = folder / "gone.png"  # found by the scan, deleted before it is read
    found = find_images([folder]).images + [gone]
    summary = caption_images(manager, found, CaptionOptions(batch_size=16))
    reasons = {image.rsplit("/", 1)[-1]: reason for image, reason in summary.failed}
    assert set(reasons) == {"notes.png", "empty.jpg", "cut.png", "huge.png", "gone.png"}
    assert "not an image" in reasons["notes.png"] and "empty" in reasons["empty.jpg"]
    assert "truncated or corrupt" in reasons["cut.png"] and "too many pixels" in reasons["huge.png"]
    assert "was not found" in reasons["gone.png"]
    assert len(summary.captioned) == 12 and len(_captions(truth)) == 12
    assert not caption_path(folder / "notes.png").exists()
    (folder / "IMG_0001.HEIC").write_bytes(b"\0\0\0\x18ftypheic")  # a phone's photo: left out, unsaid
    found = find_images([folder])
    assert [(image.rsplit("/", 1)[-1], "convert them to JPEG" in why) for image, why in found.failed] == [
        ("IMG_0001.HEIC", True)]


def test_cancel_keeps_what_is_done(manager, shapes):
    folder, truth = shapes
    cancel = threading.Event()
    seen = []

    def on_progress(progress):
        seen.append(progress)
        if progress.done >= 3:
            cancel.set()

    summary = caption_images(manager, sorted(truth), CaptionOptions(batch_size=3), progress=on_progress,
                             cancel=cancel)
    assert summary.cancelled and len(summary.captioned) == 3 and "9 not done" in summary.line()
    assert len(_captions(truth)) == 3
    assert seen[-1].total == 12 and seen[-1].images_per_s > 0 and seen[-1].eta_s > 0
    rest = caption_images(manager, sorted(truth), CaptionOptions(batch_size=8))  # a second run resumes
    assert (len(rest.skipped), len(rest.captioned)) == (3, 9)


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_one_jsonl_or_csv_file(manager, shapes, fmt):
    folder, truth = shapes
    output = folder / f"captions.{fmt}"
    summary = caption_images(manager, sorted(truth), CaptionOptions(fmt=fmt, output=output))
    text = output.read_text(encoding="utf-8")
    rows = ([json.loads(line) for line in text.splitlines()] if fmt == "jsonl"
            else list(csv.DictReader(text.splitlines())))
    assert {row["image"] for row in rows} == {path.name for path in truth}  # relative to the file
    assert sum(row["caption"] == truth[folder / row["image"]] for row in rows) >= 11
    assert summary.output == output and not list(folder.glob("*.txt"))
    again = caption_images(manager, sorted(truth), CaptionOptions(fmt=fmt, output=output))
    assert len(again.skipped) == 12 and output.read_text(encoding="utf-8") == text


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_a_file_of_captions_keeps_the_captions_pictures_already_have(manager, shapes, fmt):
    """A folder half captioned by hand (.txt, kohya's .caption) into one JSONL/CSV: those captions were replaced by
    the model's in the file, against 'images that already have a caption are skipped' (blind tester)."""
    folder, truth = shapes
    first, second = sorted(truth)[:2]
    caption_path(first).write_text("my own words", encoding="utf-8")
    first.with_suffix(".txt").rename(first.with_suffix(".caption"))
    caption_path(second).write_text("ohwx, a tag list\n", encoding="utf-8")
    output = folder / f"captions.{fmt}"
    summary = caption_images(manager, sorted(truth), CaptionOptions(fmt=fmt, output=output))
    assert len(summary.captioned) == 10 and len(summary.skipped) == 2
    assert "its caption " + first.stem + ".caption was copied into the file" in dict(summary.skipped)[str(first)]
    text = output.read_text(encoding="utf-8")
    rows = ([json.loads(line) for line in text.splitlines()] if fmt == "jsonl"
            else list(csv.DictReader(text.splitlines())))
    captions = {row["image"]: row["caption"] for row in rows}
    assert (captions[first.name], captions[second.name]) == ("my own words", "ohwx, a tag list")
    anew = caption_images(manager, [first], CaptionOptions(fmt=fmt, output=output, overwrite=True))
    assert anew.captioned == [(str(first), truth[first])]


def test_a_folder_linked_back_up_the_tree_is_scanned_once(shapes):
    """--recursive followed sub/back -> the folder itself ~40 levels deep: 164 images for 12 (blind tester)."""
    folder, truth = shapes
    (folder / "sub").mkdir()
    (folder / "sub" / "back").symlink_to(folder, target_is_directory=True)
    (folder / "again").symlink_to(folder / "sub", target_is_directory=True)
    assert sorted(find_images([folder], recursive=True).images) == sorted(truth)


def test_a_zip_is_unpacked_and_captioned(manager, shapes, tmp_path):
    folder, truth = shapes
    archive = tmp_path / "set.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(truth)[:3]:
            zf.write(path, f"sub/{path.name}")
        zf.writestr("readme.md", "not a picture, not extracted")
        zf.writestr(f"sub/{sorted(truth)[0].stem}.txt", "my own caption")  # captioned already: kept, skipped
    found = find_images([archive], unpack_to=tmp_path / "unpacked")
    assert sorted(p.name for p in found.images) == sorted(p.name for p in sorted(truth)[:3])
    summary = caption_images(manager, found.images)
    assert len(summary.captioned) == 2 and len(summary.skipped) == 1
    assert not list((tmp_path / "unpacked").glob("*/readme.md"))
    assert all(caption_path(p).exists() for p in found.images)
    assert caption_path(next(p for p in found.images if p.stem == sorted(truth)[0].stem)).read_text() == "my own caption"


def test_another_zip_of_the_same_name_is_captioned_afresh_and_the_same_zip_resumes(manager, shapes, tmp_path):
    """Both zips unpacked into unpacked/set/: the second's pictures replaced the first's and were 'skipped' with
    the first's captions (a blue triangle kept "a red circle")."""
    folder, truth = shapes
    first, second = sorted(truth)[:2]
    for name, picture in (("one", first), ("two", second)):
        (tmp_path / name).mkdir()
        with zipfile.ZipFile(tmp_path / name / "set.zip", "w") as zf:
            zf.write(picture, "picture.png")
    unpack = tmp_path / "unpacked"
    done = caption_images(manager, find_images([tmp_path / "one" / "set.zip"], unpack_to=unpack).images)
    found = find_images([tmp_path / "two" / "set.zip"], unpack_to=unpack)
    again = caption_images(manager, found.images)
    assert len(done.captioned) == len(again.captioned) == 1 and not again.skipped
    assert caption_path(found.images[0]).read_text() == truth[second]
    resumed = caption_images(manager, find_images([tmp_path / "two" / "set.zip"], unpack_to=unpack).images)
    assert len(resumed.skipped) == 1 and not resumed.captioned


def test_a_linked_picture_is_captioned_beside_the_link_and_a_broken_link_is_reported(manager, shapes, tmp_path):
    folder, truth = shapes
    library, dataset = tmp_path / "library", tmp_path / "dataset"
    library.mkdir()
    dataset.mkdir()
    target = library / "photo.png"
    target.write_bytes(sorted(truth)[1].read_bytes())
    (dataset / "link.png").symlink_to(target)
    (dataset / "broken.png").symlink_to(tmp_path / "gone.png")
    found = find_images([dataset])
    assert found.images == [dataset / "link.png"]
    assert found.failed[0][0] == str(dataset / "broken.png") and "link to a file that is not there" in found.failed[0][1]
    caption_images(manager, found.images)
    assert (dataset / "link.txt").exists() and not list(library.glob("*.txt"))  # the library is left alone
    table = tmp_path / "dataset" / "captions.jsonl"
    caption_images(manager, found.images, CaptionOptions(fmt="jsonl", output=table))
    assert json.loads(table.read_text().splitlines()[0])["image"] == "link.png"


def test_pictures_in_a_folder_that_cannot_be_written_fail_before_any_is_captioned(manager, shapes, monkeypatch):
    """A read-only mount: the .txt captions were generated for every picture, then each write failed. This
    machine runs tests as root, which writes anywhere, so os.access stands in for the read-only mount."""
    import os

    folder, truth = shapes
    caption_path(sorted(truth)[0]).write_text("kept")
    real = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False if mode == os.W_OK and str(path) == str(folder)
                        else real(path, mode))
    summary = caption_images(manager, sorted(truth), CaptionOptions())
    assert summary.generated == 0 and len(summary.skipped) == 1 and len(summary.failed) == 11
    assert "cannot be written (read-only or no permission)" in summary.failed[0][1]


def test_captions_are_files_others_may_read_and_chats_are_not(tmp_path):
    """The temp-file-then-rename write left every caption, table and results zip owner-only (0600)."""
    import os

    from vlmchat import files

    files.write_text_atomic(tmp_path / "caption.txt", "a red circle")
    files.write_text_atomic(tmp_path / "chat.json", "{}", private=True)
    (tmp_path / "shared.txt").write_text("old")
    os.chmod(tmp_path / "shared.txt", 0o664)
    files.write_text_atomic(tmp_path / "shared.txt", "new")
    modes = {name: (tmp_path / name).stat().st_mode & 0o777 for name in ("caption.txt", "chat.json", "shared.txt")}
    assert modes == {"caption.txt": 0o666 & ~files._UMASK, "chat.json": 0o600, "shared.txt": 0o664}
    assert files._UMASK & 0o044 == 0  # the umask here lets others read: the first check above says something


@pytest.mark.parametrize("member", ["../evil.png", "/tmp/evil.png", "a/../../evil.png", "C:/evil.png"])
def test_a_zip_with_a_path_traversal_member_is_refused(tmp_path, member):
    archive = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("fine.png", b"x")
        zf.writestr(member, b"x")
    with pytest.raises(InputError, match="unsafe member"):
        find_images([archive], unpack_to=tmp_path / "out")
    assert not list((tmp_path / "out").rglob("*.png")) and not (tmp_path / "evil.png").exists()


def test_the_detailed_and_tags_presets_get_what_they_ask_for(manager, shapes):
    """The Caption tab's 'Detailed description' and 'Tags' presets got the short caption from the demo."""
    folder, truth = shapes
    for path in sorted(truth)[:4]:
        colour, shape = truth[path].split()[1:]
        detailed = caption_image(manager, path, prompt=PRESETS["Detailed description"])
        assert f"{colour} {shape}" in detailed and len(detailed.split()) >= 6, detailed
        tags = [tag.strip() for tag in caption_image(manager, path, prompt=PRESETS["Tags"]).split(",")]
        assert {colour, shape} <= set(tags) or f"{colour} {shape}" in tags, tags


def test_two_images_that_would_share_a_caption_file(manager, shapes):
    folder, truth = shapes
    first = sorted(truth)[0]
    twin = first.with_suffix(".png" if first.suffix == ".jpg" else ".jpg")
    Image.open(first).save(twin)
    summary = caption_images(manager, [first, twin])
    assert len(summary.captioned) == 1 and "rename one of them" in summary.failed[0][1]


def test_forced_caption_start_is_continued_and_kept(manager, shapes):
    folder, truth = shapes
    path = next(p for p, right in truth.items() if right.startswith("a red"))
    assert caption_image(manager, path, start="a red") == truth[path]
    assert caption_image(manager, path, start="This is").startswith("This is a red " + truth[path].split()[-1])
    # a start the model does not continue (here the whole caption): the start alone was written as the caption,
    # and counted as captioned
    summary = caption_images(manager, [path], CaptionOptions(start=truth[path]))
    assert not summary.captioned and f"wrote nothing after the start '{truth[path]}'" in summary.failed[0][1]
    assert not caption_path(path).exists()


@pytest.mark.parametrize("start, answer, expected", [
    ("", "a red circle", "a red circle"), ("A photo of", "a red circle", "A photo of a red circle"),
    ("A photo of ", "", "A photo of"), ("Tags", ", red", "Tags, red"),
])
def test_with_start(start, answer, expected):
    assert with_start(start, answer) == expected


def test_no_images_and_missing_paths_are_user_mistakes(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(InputError, match="No images found.*--recursive"):
        find_images([tmp_path])
    with pytest.raises(InputError, match="does not exist"):
        find_images([tmp_path / "nope"])
    (tmp_path / "sub").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "sub" / "a.png")
    assert [p.name for p in find_images([tmp_path], recursive=True).images] == ["a.png"]


@pytest.mark.parametrize("text, expected", [
    ("[caption]\nbatch_size = 'big'\n", 'caption.batch_size must be "auto" or an int'),
    ("[caption]\nbatch_size = 0\n", "caption.batch_size must be between 1 and 256"),
    ("[caption]\nformat = 'xml'\n", "caption.format must be one of txt, jsonl, csv"),
    ("[caption]\nprompt = ' '\n", "caption.prompt must not be empty"),
])
def test_caption_settings_are_validated(tmp_path, text, expected):
    path = tmp_path / "settings.toml"
    path.write_text(text)
    with pytest.raises(SettingsError, match=expected):
        load_settings(path)
    path.write_text("[caption]\nbatch_size = 4\n")
    assert load_settings(path).caption.batch_size == 4


def test_a_run_stopped_at_its_last_image_does_not_say_0_not_done():
    from vlmchat.caption.run import CaptionSummary

    stopped = CaptionSummary(total=1, failed=[("a.png", "refused")], stopped="Endpoint 'x' refused the API key.")
    assert stopped.line().endswith("; stopped: Endpoint 'x' refused the API key")  # "stopped with 0 not done: ..."
    assert "; stopped with 2 not done: " in CaptionSummary(total=3, failed=stopped.failed, stopped="x").line()


LATIN1_NAME = os.fsdecode(b"caf\xe9.png")  # an old Windows copy's name: Python gives its byte as a surrogate


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_a_picture_whose_name_is_not_utf8_is_captioned_into_the_file(manager, shapes, fmt):
    """caf\\xe9.png made the whole JSONL/CSV fail ("surrogates not allowed"): no file, every caption lost (blind
    tester). Its name is written with the byte as \\xe9, which matches it back to the file."""
    folder, truth = shapes
    first = sorted(truth)[0]
    odd = folder / LATIN1_NAME
    first.rename(odd)
    output = folder / f"captions.{fmt}"
    summary = caption_images(manager, sorted(folder.glob("*.*")), CaptionOptions(fmt=fmt, output=output))
    assert (len(summary.captioned), summary.failed) == (12, [])
    text = output.read_text(encoding="utf-8")
    rows = ([json.loads(line) for line in text.splitlines()] if fmt == "jsonl"
            else list(csv.DictReader(text.splitlines())))
    assert {row["image"]: row["caption"] for row in rows}["caf\\xe9.png"] == truth[first]
    assert ["caf\\xe9.png (name not UTF-8: its bytes written as \\xNN)", "captioned", truth[first]] in summary.rows(folder)
    again = caption_images(manager, sorted(folder.glob("*.*")), CaptionOptions(fmt=fmt, output=output))
    assert len(again.skipped) == 12  # matched back


def test_a_txt_two_pictures_share_is_carried_for_neither(manager, shapes):
    """dup.png and dup.jpg: dup.txt was written for dup.jpg, then copied into the JSONL as dup.png's caption too
    (blind tester)."""
    folder, truth = shapes
    first, second = sorted(truth)[:2]
    png, jpg = folder / "dup.png", folder / "dup.jpg"
    Image.open(first).save(png)
    Image.open(second).convert("RGB").save(jpg, quality=95)
    (folder / "dup.txt").write_text("whose caption?", encoding="utf-8")
    output = folder / "captions.jsonl"
    summary = caption_images(manager, [png, jpg], CaptionOptions(fmt="jsonl", output=output))
    assert (len(summary.captioned), summary.skipped, summary.failed) == (2, [], [])
    rows = {row["image"]: row["caption"] for row in map(json.loads, output.read_text().splitlines())}
    assert rows == {"dup.png": truth[first], "dup.jpg": truth[second]}


def test_a_txt_caption_that_is_not_utf8_is_reported_not_mojibake(manager, shapes):
    """A cp1252 .txt went into the JSONL as 'caf\\ufffd cr\\ufffdme' without a word (blind tester)."""
    folder, truth = shapes
    first = sorted(truth)[0]
    first.with_suffix(".txt").write_bytes(b"caf\xe9 cr\xe8me")
    output = folder / "captions.jsonl"
    summary = caption_images(manager, sorted(truth), CaptionOptions(fmt="jsonl", output=output))
    assert len(summary.captioned) == 11 and summary.failed[0][0] == str(first)
    assert ("not UTF-8 text (byte 0xE9; as Windows-1252 it reads 'café crème')" in summary.failed[0][1]
            and "iconv -f cp1252 -t utf-8" in summary.failed[0][1])
    assert first.name not in output.read_text(encoding="utf-8")


def test_a_picture_just_over_pillows_limit_is_reported_without_a_raw_warning(manager, shapes, recwarn):
    """A 100 MP picture printed Pillow's DecompressionBombWarning raw on the terminal (blind tester)."""
    folder, truth = shapes
    _huge_png(folder / "big.png", side=10000)
    summary = caption_images(manager, [folder / "big.png", sorted(truth)[0]])
    assert "too many pixels" in summary.failed[0][1] and len(summary.captioned) == 1
    assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]


@pytest.mark.parametrize("name, fmt, said", [
    ("o.jsonl", "csv", "is named .jsonl but the format is csv"),  # CSV was written into o.jsonl without a word
    ("folder", "csv", "is a folder"),
    ("notes.csv", "csv", "is not a caption CSV file"),
])
def test_a_wrong_output_is_said_before_the_model_loads(tmp_path, name, fmt, said):
    """`--output` mistakes came only after the model had loaded (blind tester); check() runs before the load."""
    (tmp_path / "folder").mkdir()
    (tmp_path / "notes.csv").write_text("a,b\n1,2\n")
    with pytest.raises(InputError, match=said):
        CaptionOptions(fmt=fmt, output=tmp_path / name).check()


def test_a_csv_rewritten_keeps_its_bom_and_line_ends(manager, shapes):
    """Excel's "CSV UTF-8" (a BOM, CRLF) lost both when rows were added, and Excel then misread non-ASCII."""
    folder, truth = shapes
    first, second = sorted(truth)[:2]
    output = folder / "captions.csv"
    output.write_bytes(f"\ufeffimage,caption\r\n{first.name},café\r\n".encode("utf-8"))
    caption_images(manager, [first, second], CaptionOptions(fmt="csv", output=output))
    data = output.read_bytes()
    assert data.startswith(b"\xef\xbb\xbfimage,caption\r\n") and data.count(b"\r\n") == data.count(b"\n") == 3
    assert f"{second.name},{truth[second]}".encode() in data and "café".encode() in data


def test_the_caption_tabs_batch_size_takes_auto_or_a_whole_number():
    """'2.5' was taken as 2, unsaid (noticed in a review)."""
    from vlmchat.errors import InputError
    from vlmchat.ui.caption_tab import _batch_size

    assert _batch_size(" Auto ") == "auto" and _batch_size("") == "auto" and _batch_size("16") == 16
    assert _batch_size(8.0) == 8
    for wrong in ("2.5", "many", "inf"):
        with pytest.raises(InputError, match="whole number"):
            _batch_size(wrong)
