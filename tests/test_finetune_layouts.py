"""Dataset layouts as their own documentation writes them: LLaVA-Instruct JSON, OpenAI vision fine-tuning
JSONL (base64 data: URLs), Hugging Face imagefolder metadata, vlmchat's own caption output; empty and
unrecognised files; data: URLs through load_image, the hash, the preview and the training encoder."""

import base64
import io
import json

import pytest
from PIL import Image

from vlmchat.errors import InputError
from vlmchat.finetune.datasets import dataset_hash, preview_rows, read_dataset
from vlmchat.images import load_image

RED, GREEN, BLUE, YELLOW = (220, 20, 30), (20, 200, 40), (30, 40, 210), (240, 220, 20)
IMAGE, PROMPT = {"type": "image"}, "Describe the image."


def picture_bytes(colour, fmt="PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (24, 16), colour).save(buffer, format=fmt)
    return buffer.getvalue()


def data_url(colour, fmt="PNG") -> str:
    """A real base64 data: URL, made the way OpenAI's guide shows (base64 of the file's bytes)."""
    return f"data:image/{fmt.lower()};base64,{base64.b64encode(picture_bytes(colour, fmt)).decode()}"


def save(path, colour):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(picture_bytes(colour, "JPEG" if path.suffix == ".jpg" else "PNG"))
    return path


def colour_of(image) -> tuple:
    return load_image(image).getpixel((12, 8))


def assert_colour(image, expected):
    assert all(abs(a - b) <= 12 for a, b in zip(colour_of(image), expected)), (colour_of(image), expected)


def text(value):
    return {"type": "text", "text": value}


def item_lines(text_of_file: str) -> list[int]:
    """The line each top-level item of a json.dumps(..., indent=2) list starts on."""
    return [n for n, line in enumerate(text_of_file.splitlines(), start=1) if line == "  {"]


# LLaVA-Instruct JSON (LLaVA docs/Finetune_Custom_Data.md)

def test_llava_instruct_json_as_documented(tmp_path):
    save(tmp_path / "part-000001" / "997bb945-628d-4724-b370-b84de974a19f.jpg", RED)
    save(tmp_path / "images" / "001.png", GREEN)  # LLaVA's image folder beside the JSON
    save(tmp_path / "002.png", BLUE)
    save(tmp_path / "003.png", YELLOW)
    rows = [
        {"id": "997bb945-628d-4724-b370-b84de974a19f",
         "image": "part-000001/997bb945-628d-4724-b370-b84de974a19f.jpg",
         "conversations": [
             {"from": "human", "value": "<image>\nWrite a prompt for Stable Diffusion to generate this image."},
             {"from": "gpt", "value": "a beautiful painting, hyper detailed, octane render. "}]},
        {"id": "1", "image": "001.png",
         "conversations": [{"from": "human", "value": "What colour is it?\n<image>"},
                           {"from": "gpt", "value": "Green."}]},
        {"id": "2", "image": "002.png",
         "conversations": [{"from": "human", "value": "Name the colour."}, {"from": "gpt", "value": "Blue."},
                           {"from": "human", "value": "Sure?"}, {"from": "gpt", "value": "Yes."}]},
        {"id": "3", "image": ["002.png", "003.png"],
         "conversations": [{"from": "human", "value": "<image>\n<image>\nWhich comes first?"},
                           {"from": "gpt", "value": "The blue one."}]},
        {"id": "4", "conversations": [{"from": "human", "value": "Say hello."}, {"from": "gpt", "value": "Hello."}]},
    ]
    path = tmp_path / "llava_instruct.json"
    path.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    report = read_dataset(path)
    assert report.format == "LLaVA-Instruct JSON" and report.problems == []
    first, end, none, two, text_only = report.samples
    assert [s.source for s in report.samples] == [f"llava_instruct.json:{n}" for n in item_lines(path.read_text())]
    assert first.messages[0] == {"role": "user", "content": [
        IMAGE, text("Write a prompt for Stable Diffusion to generate this image.")]}
    assert first.messages[1] == {"role": "assistant",
                                 "content": [text("a beautiful painting, hyper detailed, octane render.")]}
    assert end.messages[0]["content"] == [IMAGE, text("What colour is it?")]  # one picture goes first, as Chat asks
    assert end.images == (str(tmp_path / "images" / "001.png"),)
    assert none.messages[0]["content"] == [IMAGE, text("Name the colour.")] and len(none.messages) == 4
    assert two.messages[0]["content"] == [IMAGE, IMAGE, text("Which comes first?")]
    assert two.images == (str(tmp_path / "002.png"), str(tmp_path / "003.png"))
    assert text_only.images == () and text_only.messages[1]["content"] == [text("Hello.")]
    for sample, colour in ((first, RED), (end, GREEN), (none, BLUE)):
        assert_colour(sample.images[0], colour)
    assert_colour(two.images[1], YELLOW)


def test_llava_example_copied_from_its_docs_with_the_trailing_comma(tmp_path):
    save(tmp_path / "part-000001" / "997bb945-628d-4724-b370-b84de974a19f.jpg", RED)
    path = tmp_path / "custom.json"
    path.write_text(r'''[
  {
    "id": "997bb945-628d-4724-b370-b84de974a19f",
    "image": "part-000001/997bb945-628d-4724-b370-b84de974a19f.jpg",
    "conversations": [
      {
        "from": "human",
        "value": "<image>\nWrite a prompt for Stable Diffusion to generate this image."
      },
      {
        "from": "gpt",
        "value": "a red painting, cel shading. "
      },
    ]
  }
]
''', encoding="utf-8")
    report = read_dataset(path)
    assert report.problems == [] and len(report.samples) == 1
    assert report.samples[0].source == "custom.json:2"
    assert report.samples[0].messages[1]["content"] == [text("a red painting, cel shading.")]


def test_llava_rows_with_problems_name_the_fix(tmp_path):
    save(tmp_path / "a.png", RED)
    turns = [{"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "Red."}]
    rows = [
        {"id": "ok", "image": "a.png", "conversations": turns},
        {"id": "missing", "image": "nope.jpg", "conversations": turns},
        {"id": "count", "image": "a.png", "conversations": [
            {"from": "human", "value": "<image>\n<image>\nBoth?"}, {"from": "gpt", "value": "No."}]},
        {"id": "web", "image": "http://images.cocodataset.org/train2017/000000033471.jpg", "conversations": turns},
        {"id": "both", "image": "a.png", "images": ["a.png"], "conversations": turns},
        {"id": "no image key", "conversations": turns},
    ]
    path = tmp_path / "llava.json"
    path.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    report = read_dataset(path)
    assert [s.source for s in report.samples] == [f"llava.json:{item_lines(path.read_text())[0]}"]
    lines = item_lines(path.read_text())
    problems = {p.line: p.message for p in report.problems}
    assert sorted(problems) == lines[1:]
    assert str(tmp_path / "nope.jpg") in problems[lines[1]]
    assert str(tmp_path / "images" / "nope.jpg") in problems[lines[1]]
    assert problems[lines[2]].startswith("2 <image> placeholders but 1 image in 'image'; put one <image> per image")
    assert "download the image first and use a local path or a data: URL" in problems[lines[3]]
    assert "keep one" in problems[lines[4]]
    assert "list the image files in 'images' (LLaMA-Factory) or 'image' (LLaVA)" in problems[lines[5]]


def test_rows_of_a_json_list_on_one_line_are_named_by_number_and_id(tmp_path):
    """Every problem of a minified LLaVA file pointed at llava.json:1 (blind tester)."""
    save(tmp_path / "a.png", RED)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    turns = [{"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "Red."}]
    rows = [{"id": f"r{index}", "image": "a.png", "conversations": turns} for index in range(10)]
    rows[1]["image"], rows[9]["image"] = "nope.jpg", "broken.png"
    del rows[4]["id"]
    rows[4]["conversations"] = turns[:1]
    path = tmp_path / "llava.json"
    path.write_text(json.dumps(rows), encoding="utf-8")
    report = read_dataset(path)
    assert report.samples[0].source == 'llava.json: row 1 (id "r0")' and len(report.samples) == 7
    assert [str(p).split(":")[:2] for p in report.problems] == [
        ["llava.json", ' row 2 (id "r1")'], ["llava.json", " row 5"], ["llava.json", ' row 10 (id "r9")']]
    assert "nope.jpg" in str(report.problems[0]) and "assistant answer" in str(report.problems[1])
    path.write_text(json.dumps(rows, indent=2), encoding="utf-8")  # one row a line (or more): the lines, as before
    assert [p.line for p in read_dataset(path).problems] == [item_lines(path.read_text())[i] for i in (1, 4, 9)]


# OpenAI vision fine-tuning JSONL (OpenAI's vision fine-tuning guide)

def test_openai_vision_fine_tuning_jsonl_with_base64_data_urls(tmp_path):
    artwork, photo = data_url(RED, "JPEG"), data_url(BLUE)
    rows = [
        {"messages": [
            {"role": "system", "content": "You are an assistant that identifies and describes artworks."},
            {"role": "user", "content": "Describe this artwork."},
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": artwork}}]},
            {"role": "assistant", "content": "A red square on white."}]},
        {"messages": [
            {"role": "system", "content": "You describe photos."},
            {"role": "user", "content": [{"type": "text", "text": "What colour is this?"},
                                         {"type": "image_url", "image_url": {"url": photo, "detail": "low"}}]},
            {"role": "assistant", "content": "Blue."}]},
    ]
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    report = read_dataset(path)
    assert report.format == "OpenAI vision fine-tuning JSONL" and report.problems == []
    art, blue = report.samples
    assert [m["role"] for m in art.messages] == ["system", "user", "assistant"]  # the two user messages are one turn
    # OpenAI's guide writes the text first; the one picture is trained first, as Chat, Caption and Evaluate ask (an
    # adapter trained text-first answered "a red" for "circle red" in all three: reviewer, demo model)
    assert art.messages[1]["content"] == [IMAGE, text("Describe this artwork.")]
    assert art.messages[2]["content"] == [text("A red square on white.")]
    assert blue.messages[1]["content"] == [IMAGE, text("What colour is this?")]
    assert art.images == (artwork,) and blue.source == "train.jsonl:2"
    assert_colour(art.images[0], RED)
    assert_colour(blue.images[0], BLUE)
    labels = preview_rows(report)[0]["images"]
    assert labels[0].startswith("data: URL image (jpeg, ") and "/" not in labels[0] and len(labels[0]) < 60


def test_openai_rows_with_problems(tmp_path, monkeypatch):
    def row(url, answer="Red."):
        return {"messages": [{"role": "user", "content": [{"type": "text", "text": "Colour?"},
                                                          {"type": "image_url", "image_url": {"url": url}}]},
                             {"role": "assistant", "content": answer}]}

    text_bytes = base64.b64encode(b"this is not a picture").decode()
    rows = [
        row(data_url(RED)),
        row("https://upload.wikimedia.org/wikipedia/commons/3/36/Danbo_Cheese.jpg"),
        row("data:image/png;base64,@@not*base64@@"),
        row(f"data:image/png;base64,{text_bytes}"),
        {"messages": [{"role": "user", "content": "Draw a red square."},
                      {"role": "assistant", "content": [{"type": "image_url", "image_url": {"url": data_url(RED)}}]}]},
        row("data:image/png;base64," + "A" * 400),
    ]
    path = tmp_path / "vision.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    monkeypatch.setattr("vlmchat.images.MAX_DATA_URL_BYTES", 200)
    report = read_dataset(path)
    assert [s.source for s in report.samples] == ["vision.jsonl:1"]
    problems = {p.line: p.message for p in report.problems}
    assert sorted(problems) == [2, 3, 4, 5, 6]
    assert "web URLs are not fetched: download the image first and use a local path or a data: URL" in problems[2]
    assert problems[3].startswith("'image 1 (data: URL)' is not valid base64")
    assert problems[4].startswith("'image 1 (data: URL)' is not an image")
    assert "images belong in user messages" in problems[5]
    assert "over the 0 MB limit for data: URL images" in problems[6]


def test_data_url_images_hash_like_the_same_file_and_show_in_the_tab_preview(tmp_path):
    save(tmp_path / "red.png", RED)
    turns = lambda image: {"messages": [  # noqa: E731
        {"role": "user", "content": [{"type": "text", "text": "Colour?"},
                                     {"type": "image_url", "image_url": {"url": image}}]},
        {"role": "assistant", "content": "Red."}]}
    for name, image in (("url.jsonl", data_url(RED)), ("file.jsonl", "red.png"), ("other.jsonl", data_url(GREEN))):
        (tmp_path / name).write_text(json.dumps(turns(image)) + "\n", encoding="utf-8")
    url, file, other = (read_dataset(tmp_path / n).samples for n in ("url.jsonl", "file.jsonl", "other.jsonl"))
    assert dataset_hash(url) == dataset_hash(file) != dataset_hash(other)

    from vlmchat.ui.finetune_tab import _check_result

    report = read_dataset(tmp_path / "url.jsonl")
    markdown, rows = _check_result({"format": report.format, "samples": 1, "problems": [],
                                    "preview": preview_rows(report)})
    assert "OpenAI vision fine-tuning JSONL" in markdown
    assert rows == [["url.jsonl:1", "data: URL image (png, 0.1 KB)", "Colour?", "Red."]]


# Hugging Face imagefolder (datasets docs: "Create an image dataset")

def test_imagefolder_metadata_jsonl_as_documented(tmp_path):
    folder = tmp_path / "folder"
    for name, colour in (("0001.png", RED), ("0002.png", GREEN), ("0003.png", BLUE), ("dogs/0004.png", YELLOW),
                         ("unlisted.png", RED)):
        save(folder / name, colour)
    (folder / "0001.txt").write_text("a sidecar caption that the metadata outranks")
    (folder / "metadata.jsonl").write_text(
        '{"file_name": "0001.png", "text": "This is a golden retriever playing with a ball"}\n'
        '{"file_name": "0002.png", "text": "A german shepherd"}\n'
        '{"file_name": "0003.png", "text": "One chihuahua"}\n'
        '{"file_name": "dogs/0004.png", "text": "A yellow dog"}\n'
        '{"file_name": "gone.png", "text": "A lost dog"}\n'
        '{"file_name": "0002.png", "text": ""}\n', encoding="utf-8")
    report = read_dataset(folder, caption_prompt="What dog is this?")
    assert report.format == "Hugging Face imagefolder (metadata.jsonl)"
    assert [s.source for s in report.samples] == [f"metadata.jsonl:{n}" for n in (1, 2, 3, 4)]
    first = report.samples[0]
    assert first.messages == ({"role": "user", "content": [IMAGE, text("What dog is this?")]},
                              {"role": "assistant",
                               "content": [text("This is a golden retriever playing with a ball")]})
    assert report.samples[3].images == (str(folder / "dogs" / "0004.png"),)
    for sample, colour in zip(report.samples, (RED, GREEN, BLUE, YELLOW)):
        assert_colour(sample.images[0], colour)
    assert [str(p) for p in report.problems] == [
        f"metadata.jsonl:5: file_name 'gone.png' was not found: neither {folder / 'gone.png'} nor "
        f"{folder / 'images' / 'gone.png'} exists, nor a file of that name below {folder} (paths are relative to "
        f"{folder}: the dataset file's folder, or dataset_info.json's where that registers it; a dataset uploaded as "
        "separate files keeps no folders: upload a .zip to keep them)",
        "metadata.jsonl:6: empty caption"]
    direct = read_dataset(folder / "metadata.jsonl", caption_prompt="What dog is this?")
    assert direct.samples == report.samples and direct.format == report.format


def test_imagefolder_rows_with_several_images_or_named_image_columns(tmp_path):
    """`datasets` reads file_name, any *_file_name (an image each) and file_names / *_file_names (a list each) as
    image columns of imagefolder metadata; vlmchat took only file_name and called the others 'in no layout'
    (format reviewer). Every image of a row goes into its question, in column order."""
    folder = tmp_path / "folder"
    for name, colour in (("a.png", RED), ("b.png", GREEN), ("p.png", BLUE)):
        save(folder / name, colour)
    (folder / "metadata.jsonl").write_text(
        '{"file_names": ["a.png", "b.png"], "text": "a red one, then a green one"}\n'
        '{"file_names": [], "text": "nothing to see"}\n'
        '{"file_names": "a.png", "text": "not a list"}\n', encoding="utf-8")
    report = read_dataset(folder)
    assert report.format == "Hugging Face imagefolder (metadata.jsonl)"
    (sample,) = report.samples
    assert sample.messages[0]["content"][:2] == [IMAGE, IMAGE]
    assert [colour_of(image) for image in sample.images] == [RED, GREEN]
    assert [(p.line, p.message) for p in report.problems] == [
        (2, "no file_names"), (3, "'file_names' must be a list of files (a column named *file_names holds several)")]
    (folder / "metadata.jsonl").write_text('{"photo_file_name": "p.png", "caption": "a blue one"}\n', "utf-8")
    (sample,) = read_dataset(folder).samples
    assert [colour_of(image) for image in sample.images] == [BLUE] and sample.messages[1]["content"] == [
        text("a blue one")]


def test_imagefolder_metadata_csv_and_the_train_split_folder(tmp_path):
    split = tmp_path / "folder" / "train"
    save(split / "0001.png", RED)
    save(split / "images" / "0002.png", GREEN)
    (split / "metadata.csv").write_text(
        "file_name,additional_feature\n"
        "0001.png,This is a first value of a text feature you added to your images\n"
        'images/0002.png,"A second value,\nwritten on two lines"\n'
        "0003.png,This one has no picture\n", encoding="utf-8")
    report = read_dataset(tmp_path / "folder")
    assert report.format == "Hugging Face imagefolder (metadata.csv)"
    assert [s.source for s in report.samples] == ["metadata.csv:2", "metadata.csv:3"]
    assert report.samples[1].messages[1]["content"] == [text("A second value,\nwritten on two lines")]
    assert_colour(report.samples[1].images[0], GREEN)
    assert [p.line for p in report.problems] == [5] and "was not found" in report.problems[0].message
    save(tmp_path / "folder" / "test" / "0009.png", BLUE)  # a test split beside it: named, not silently left out
    (tmp_path / "folder" / "test" / "metadata.csv").write_text("file_name,text\n0009.png,blue\n", encoding="utf-8")
    report = read_dataset(tmp_path / "folder")
    assert report.format == "Hugging Face imagefolder (metadata.csv); the train split (the folder also holds test)"
    assert len(report.samples) == 2


def test_an_imagefolder_in_a_subfolder_is_its_one_dataset_file_whatever_its_metadata_kind(tmp_path):
    """A metadata.csv below the top was no dataset file (its pictures were read as uncaptioned), and beside a
    metadata.jsonl in another subfolder the .jsonl was read alone (blind tester); a Parquet file beside another
    kind was read alone too. Every dataset file kind counts below the top as metadata.jsonl does."""
    pa = pytest.importorskip("pyarrow")
    save(tmp_path / "one" / "if_csv" / "0001.png", RED)
    (tmp_path / "one" / "if_csv" / "metadata.csv").write_text("file_name,text\n0001.png,red\n", encoding="utf-8")
    (tmp_path / "one" / "README.md").write_text("# pictures\n")  # as a zip holds it beside the dataset's folder
    report = read_dataset(tmp_path / "one")
    assert (len(report.samples), report.problems) == (1, [])
    assert report.format == "Hugging Face imagefolder (metadata.csv) (if_csv/metadata.csv, the one dataset file in one)"
    save(tmp_path / "one" / "b" / "0002.png", GREEN)
    (tmp_path / "one" / "b" / "metadata.jsonl").write_text('{"file_name": "0002.png", "text": "green"}\n', "utf-8")
    with pytest.raises(InputError, match=r"several below it \(b/metadata.jsonl, if_csv/metadata.csv\)"):
        read_dataset(tmp_path / "one")
    (tmp_path / "one" / "b" / "metadata.jsonl").unlink()  # a tagger's tags.csv beside pictures is no dataset file
    (tmp_path / "one" / "b" / "tags.csv").write_text("tag,count\nred,1\n", encoding="utf-8")
    assert len(read_dataset(tmp_path / "one").samples) == 1  # (it refused the folder: reviewer)
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    _hub_parquet(tmp_path / "two", {"image": image, "text": pa.string()},
                 {"image": {"_type": "Image"}, "text": {"dtype": "string", "_type": "Value"}},
                 [{"image": {"bytes": picture_bytes(BLUE), "path": "blue.png"}, "text": "blue"}])
    save(tmp_path / "two" / "b" / "0002.png", GREEN)
    (tmp_path / "two" / "b" / "metadata.jsonl").write_text('{"file_name": "0002.png", "text": "green"}\n', "utf-8")
    with pytest.raises(InputError, match=r"several below it \(b/metadata.jsonl, data/train-00000-of-00001.parquet\)"):
        read_dataset(tmp_path / "two")


def test_alpaca_rows_without_dataset_info_are_read_with_llama_factorys_default_columns(tmp_path):
    """LLaMA-Factory's Alpaca format (instruction, input, output, images) was refused as 'in no layout' (format
    reviewer); its default columns need no dataset_info.json."""
    save(tmp_path / "pics" / "1.png", GREEN)
    rows = [{"instruction": "<image>Which colour?", "input": "", "output": "Green.", "images": ["pics/1.png"]},
            {"instruction": "Say hi", "output": ""}]
    (tmp_path / "alpaca.json").write_text(json.dumps(rows), encoding="utf-8")
    report = read_dataset(tmp_path / "alpaca.json")
    assert report.format == "Alpaca (LLaMA-Factory)"
    (sample,) = report.samples
    assert sample.messages[0]["content"] == [IMAGE, text("Which colour?")] and sample.messages[1]["content"] == [
        text("Green.")]
    assert [p.message for p in report.problems] == ["empty answer in message 2"]


@pytest.mark.parametrize("header, values, column", [
    ("file_name,label,text", "cat,a cat on a sofa", "a cat on a sofa"),
    ("file_name,caption,description", "a cat,a long description", "a cat"),
    ("file_name,id,description", "17,a cat by a window", "a cat by a window"),
    ("file_name, prompt", "a cat in a box", "a cat in a box"),
    ("file_name,score,tags", "0.5,cat|sofa", "cat|sofa"),
])
def test_imagefolder_caption_column(tmp_path, header, values, column):
    save(tmp_path / "0001.png", RED)
    (tmp_path / "metadata.csv").write_text(f"{header}\n0001.png,{values}\n", encoding="utf-8")
    report = read_dataset(tmp_path)
    assert report.samples[0].messages[1]["content"] == [text(column)]


@pytest.mark.parametrize("header, values, message", [
    ("file_name,n,m", "1,2", "its columns are file_name, n, m"),
    ("file_name,title,notes", "Cat,on a sofa", "title, notes could each be it"),
])
def test_imagefolder_without_a_clear_caption_column_says_how_to_name_it(tmp_path, header, values, message):
    save(tmp_path / "0001.png", RED)
    (tmp_path / "metadata.csv").write_text(f"{header}\n0001.png,{values}\n", encoding="utf-8")
    with pytest.raises(InputError, match=f"{message}.*name the caption column 'text'"):
        read_dataset(tmp_path)


# vlmchat's own `caption --format jsonl|csv` output: the closed loop

@pytest.mark.parametrize("fmt, name", [("jsonl", "vlmchat caption JSONL"), ("csv", "vlmchat caption CSV")])
def test_caption_output_of_vlmchat_trains(tmp_path, fmt, name):
    from vlmchat.caption.io import open_captions

    folder = tmp_path / "shots"
    red, green = save(folder / "red.png", RED), save(folder / "sub" / "green.png", GREEN)
    elsewhere = save(tmp_path / "elsewhere" / "blue.png", BLUE)
    output = folder / f"captions.{fmt}"
    store = open_captions(fmt, output, overwrite=False)
    for image, caption in ((red, "a red card"), (green, "a green leaf, on grass"), (elsewhere, "a blue sky")):
        store.put(image, caption)
    store.close()
    for path in (output, folder):  # the file itself, or the folder holding it and its images
        report = read_dataset(path)
        assert report.format == name and report.problems == []
        by_answer = {s.messages[1]["content"][0]["text"]: s for s in report.samples}
        assert set(by_answer) == {"a red card", "a green leaf, on grass", "a blue sky"}
        assert by_answer["a red card"].messages[0]["content"] == [IMAGE, text(PROMPT)]
        assert by_answer["a green leaf, on grass"].images == (str(folder / "sub" / "green.png"),)
        for answer, colour in (("a red card", RED), ("a green leaf, on grass", GREEN), ("a blue sky", BLUE)):
            assert_colour(by_answer[answer].images[0], colour)


def test_caption_rows_with_problems(tmp_path):
    save(tmp_path / "red.png", RED)
    (tmp_path / "captions.csv").write_text("image,caption\nred.png,a red card\nmissing.png,a ghost\nred.png,\n"
                                           "https://example.com/a.png,a web picture\n", encoding="utf-8")
    report = read_dataset(tmp_path / "captions.csv")
    assert len(report.samples) == 1
    problems = {p.line: p.message for p in report.problems}
    assert sorted(problems) == [3, 4, 5]
    assert "was not found" in problems[3] and problems[4] == "empty caption"
    assert "download the image first" in problems[5]


# Empty and unrecognised files, folders

@pytest.mark.parametrize("name, content, example", [
    ("data.jsonl", "", '"messages"'),
    ("data.jsonl", "\n  \n", '"caption"'),
    ("data.json", "[]", '"conversations"'),
    ("data.json", "  [\n ]\n", '"images"'),
    ("captions.csv", "", "image,caption"),
    ("captions.csv", "image,caption\n", "file_name,text"),
])
def test_an_empty_file_says_it_is_empty_and_what_a_row_looks_like(tmp_path, name, content, example):
    (tmp_path / name).write_text(content, encoding="utf-8")
    with pytest.raises(InputError, match=f"^{name} is empty: ") as error:
        read_dataset(tmp_path / name)
    assert example in str(error.value) and "\n" not in str(error.value)


def test_a_file_in_no_known_layout_lists_the_layouts_with_an_example_each(tmp_path):
    (tmp_path / "qa.jsonl").write_text('{"question": "Colour?", "answer": "red"}\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"its first row has: question, answer") as error:
        read_dataset(tmp_path / "qa.jsonl")
    for layout in ("ShareGPT (LLaMA-Factory): {", "OpenAI messages / vision fine-tuning JSONL: {",
                   "Hugging Face imagefolder (metadata.jsonl / metadata.csv): {", "vlmchat caption JSONL / CSV: {"):
        assert layout in str(error.value)
    (tmp_path / "table.csv").write_text("path,label\na.png,cat\n", encoding="utf-8")
    with pytest.raises(InputError, match="columns path, label, which are no layout.*image,caption"):
        read_dataset(tmp_path / "table.csv")


def test_folders_with_nothing_or_too_much_say_so(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no images and no dataset file"):
        read_dataset(tmp_path / "empty")
    (tmp_path / "two").mkdir()
    for name in ("train.jsonl", "val.jsonl"):
        (tmp_path / "two" / name).write_text("{}\n")
    with pytest.raises(InputError, match=r"several dataset files \(train.jsonl, val.jsonl\)"):
        read_dataset(tmp_path / "two")


def test_llama_factorys_data_folder_with_several_datasets_trains_the_one_registered_with_images(tmp_path):
    """LLaMA-Factory's data/: dataset_info.json registers mllm_demo (messages + images) and identity (text only);
    zipped and uploaded, the folder was refused with 'give the one to train on as the dataset path', which an
    upload cannot do."""
    data = tmp_path / "data"
    save(data / "mllm_demo_data" / "1.png", RED)
    rows = [{"messages": [{"role": "user", "content": "<image>What colour?"}, {"role": "assistant", "content": "Red."}],
             "images": ["mllm_demo_data/1.png"]}]
    (data / "mllm_demo.json").write_text(json.dumps(rows), encoding="utf-8")
    identity = [{"instruction": "hi", "input": "", "output": "Hello, I am {{name}}."}]
    (data / "identity.json").write_text(json.dumps(identity), encoding="utf-8")
    (data / "wiki_demo.txt").write_text("Anarchism is a political philosophy...\n", encoding="utf-8")
    (data / "dataset_info.json").write_text(json.dumps({
        "identity": {"file_name": "identity.json"},
        "wiki_demo": {"file_name": "wiki_demo.txt", "columns": {"prompt": "text"}},
        "mllm_demo": {"file_name": "mllm_demo.json", "formatting": "sharegpt",
                      "columns": {"messages": "messages", "images": "images"},
                      "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                               "assistant_tag": "assistant"}}}), encoding="utf-8")
    report = read_dataset(data)
    assert len(report.samples) == 1 and not report.problems
    assert report.format == ("ShareGPT (LLaMA-Factory) — mllm_demo.json, the dataset dataset_info.json registers "
                             "with images")


# data: URLs in load_image

def test_load_image_decodes_data_urls_and_refuses_bad_ones():
    payload = base64.b64encode(picture_bytes(GREEN)).decode()
    assert_colour(f"data:image/png;base64,{payload}", GREEN)
    wrapped = "\n".join(payload[i:i + 76] for i in range(0, len(payload), 76))
    assert_colour(f"data:image/png;base64,{wrapped}", GREEN)
    urlsafe = base64.urlsafe_b64encode(picture_bytes(BLUE)).decode().rstrip("=")
    assert_colour(f"data:image/png;base64,{urlsafe}", BLUE)
    from urllib.parse import quote_from_bytes

    assert_colour("data:image/png," + quote_from_bytes(picture_bytes(RED)), RED)
    with pytest.raises(InputError, match="'data: URL image' is not valid base64"):
        load_image("data:image/png;base64,%%%")
    with pytest.raises(InputError, match="not a valid data: URL"):
        load_image("data:image/png;base64")
    with pytest.raises(InputError, match="over the 0 MB limit"):
        load_image(f"data:image/png;base64,{payload}", max_bytes=50)
    with pytest.raises(InputError, match="truncated or corrupt"):
        load_image(f"data:image/png;base64,{payload[:80]}")


# Every layout reaches the training encoder

def test_samples_of_every_layout_encode_for_training(tmp_path, demo_model_path):
    from transformers import AutoProcessor

    from vlmchat.finetune.batches import EncodedSamples, micro_batch

    save(tmp_path / "a.png", RED)
    save(tmp_path / "images" / "b.png", GREEN)
    (tmp_path / "llava.json").write_text(json.dumps([{"id": "1", "image": "b.png", "conversations": [
        {"from": "human", "value": "<image>\nWhat colour?"}, {"from": "gpt", "value": "verde"}]}]))
    (tmp_path / "openai.jsonl").write_text(json.dumps({"messages": [
        {"role": "user", "content": "Describe the image."},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_url(BLUE, "JPEG")}}]},
        {"role": "assistant", "content": "un cuadrado azul"}]}) + "\n")
    (tmp_path / "captions.jsonl").write_text(json.dumps({"image": "a.png", "caption": "un círculo rojo"}) + "\n")
    folder = tmp_path / "hf"
    save(folder / "0001.png", YELLOW)
    (folder / "metadata.csv").write_text("file_name,text\n0001.png,un triángulo amarillo\n")
    samples = [s for p in ("llava.json", "openai.jsonl", "captions.jsonl", "hf")
               for s in read_dataset(tmp_path / p).samples]
    assert len(samples) == 4
    processor = AutoProcessor.from_pretrained(demo_model_path)
    data = EncodedSamples(samples, processor, max_length=512)
    [batch] = micro_batch(data, [0, 1, 2, 3], processor.tokenizer.pad_token_id)
    assert data.skipped == {} and batch["pixel_values"].shape[0] == 4
    learned = processor.tokenizer.decode(data.get(1)["labels"][data.get(1)["labels"] != -100])
    assert "un cuadrado azul" in learned and "Describe" not in learned


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["OpenAI vision fine-tuning JSONL", "LLaVA-Instruct JSON"])
def test_cli_trains_an_adapter_on_the_layout(tmp_path, demo_model_path, layout):
    import os
    import random
    import subprocess
    import sys

    from conftest import ROOT, write_settings
    from vlmchat.demo.dialogue import answer
    from vlmchat.demo.shapes import draw_picture

    rng, rows = random.Random(0), []
    for index in range(6):
        picture = draw_picture(rng)
        caption = answer("caption", picture.colour, picture.shape, "es")
        buffer = io.BytesIO()
        picture.image.save(buffer, format="PNG")
        if layout == "LLaVA-Instruct JSON":
            picture.image.save(tmp_path / f"{index}.png")
            rows.append({"id": str(index), "image": f"{index}.png", "conversations": [
                {"from": "human", "value": "<image>\nDescribe the image."}, {"from": "gpt", "value": caption}]})
        else:
            url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
            rows.append({"messages": [{"role": "user", "content": "Describe the image."},
                                      {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]},
                                      {"role": "assistant", "content": caption}]})
    data = tmp_path / ("train.json" if layout == "LLaVA-Instruct JSON" else "train.jsonl")
    lines = "".join(json.dumps(row) + "\n" for row in rows)
    data.write_text(json.dumps(rows, indent=2) if data.suffix == ".json" else lines)
    if layout == "LLaVA-Instruct JSON":  # as it is often handed over: a zip of the file and its pictures
        import zipfile

        with zipfile.ZipFile(tmp_path / "llava.zip", "w") as zipped:
            for file in [data, *tmp_path.glob("*.png")]:
                zipped.write(file, f"llava/{file.name}")
        data = tmp_path / "llava.zip"
    settings = write_settings(tmp_path)
    result = subprocess.run([sys.executable, "launch.py", "--settings", str(settings), "finetune", "--data", str(data),
                             "--name", "layout-es", "--max-steps", "2", "--batch-size", "2", "--grad-accumulation", "1",
                             "--learning-rate", "0.003", "--eval-every", "0"],
                            cwd=ROOT, env=dict(os.environ, VLMCHAT_NO_BOOTSTRAP="1"), capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"{layout}: 6 usable samples, 0 problems." in result.stderr
    if data.suffix == ".zip":  # it was refused: zips were for uploads only
        assert "llava.zip unpacked into " in result.stderr
    meta = json.loads((tmp_path / "adapters" / "layout-es" / "vlmchat.json").read_text())
    assert meta["dataset"]["format"] == layout and meta["dataset"]["size"] == 6
    # The model card names the base as adapter_config.json does, not as this computer's folder (it goes out in
    # every export of the adapter).
    assert "base_model: models/vlmchat-demo" in (tmp_path / "adapters" / "layout-es" / "README.md").read_text()
    assert meta["metrics"]["steps"] == 2 and meta["metrics"]["final_train_loss"] > 0


@pytest.mark.parametrize("model_type", ["demo", "idefics3"])
def test_a_batch_mixing_pictures_and_text_only_rows_trains_with_the_loss_of_one_batch(tmp_path, demo_model_path,
                                                                                       model_type):
    """LLaVA-Instruct mixes rows with and without `image`: a micro-batch of both is one forward pass per kind
    (LLaVA lays pictures out one row per picture, Idefics3 one row per sample), and their losses combine into the
    mean per answer token that one batch would give, i.e. each sample's loss weighted by its answer tokens."""
    import torch
    from families import save_family
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from vlmchat.finetune.batches import EncodedSamples, micro_batch
    from vlmchat.finetune.collate import answer_loss, answer_tokens, collate

    folder = demo_model_path if model_type == "demo" else save_family(model_type, tmp_path / model_type).path
    save(tmp_path / "a.png", RED)
    rows = [{"id": "1", "image": "a.png", "conversations": [{"from": "human", "value": "<image>\nColour?"},
                                                             {"from": "gpt", "value": "rojo"}]},
            {"id": "2", "conversations": [{"from": "human", "value": "Which shapes?"},
                                          {"from": "gpt", "value": "circle, square and triangle"}]},
            {"id": "3", "image": "a.png", "conversations": [{"from": "human", "value": "<image>\nDescribe."},
                                                             {"from": "gpt", "value": "un círculo rojo grande"}]}]
    (tmp_path / "mixed.json").write_text(json.dumps(rows), encoding="utf-8")
    report = read_dataset(tmp_path / "mixed.json")
    assert len(report.samples) == 3 and not report.problems
    processor = AutoProcessor.from_pretrained(folder)
    model = AutoModelForImageTextToText.from_pretrained(folder).eval()
    data = EncodedSamples(report.samples, processor, max_length=4096)
    pad = processor.tokenizer.pad_token_id or 0
    batches = micro_batch(data, [0, 1, 2], pad)
    assert [b["input_ids"].shape[0] for b in batches] == [2, 1] and "pixel_values" not in batches[1]
    with torch.no_grad():
        loss, tokens = answer_loss(model, batches)
        alone = [(model(**collate([data.get(i)], pad)).loss, answer_tokens(collate([data.get(i)], pad)))
                 for i in range(3)]
    assert int(tokens) == sum(int(n) for _, n in alone)
    assert float(loss) == pytest.approx(float(sum(l * n for l, n in alone) / tokens), rel=1e-4)


def test_trl_conversational_rows_take_their_pictures_from_the_images_column(tmp_path):
    """TRL's / Hugging Face's vision SFT layout (e.g. HuggingFaceH4/llava-instruct-mix-vsft): `messages` whose
    image parts are bare {"type": "image"}, the files in the row's `images`, in order; a count that differs is
    that row's problem."""
    save(tmp_path / "img" / "0.png", RED)
    save(tmp_path / "img" / "1.png", BLUE)
    user = lambda text, pictures: {"role": "user", "content": [IMAGE] * pictures + [{"type": "text", "text": text}]}  # noqa: E731
    answer = lambda text: {"role": "assistant", "content": [{"type": "text", "text": text}]}  # noqa: E731
    rows = [{"messages": [{"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
                          user("What is this?", 1), answer("a red circle")], "images": ["img/0.png"]},
            {"messages": [user("Same colour?", 2), answer("no")], "images": ["img/0.png", {"path": "img/1.png"}]},
            {"messages": [user("Two?", 2), answer("yes")], "images": ["img/0.png"]}]
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(row) for row in rows), encoding="utf-8")
    report = read_dataset(tmp_path / "train.jsonl")
    assert len(report.samples) == 2 and report.samples[0].messages[0]["role"] == "system"
    assert [len(s.images) for s in report.samples] == [1, 2]
    assert report.samples[1].images[1] == str(tmp_path / "img" / "1.png")
    assert [str(p) for p in report.problems] == [
        "train.jsonl:3: 2 image parts without a file of their own but 1 files in 'images'; they must match"]
    named = {"messages": [{"role": "user", "content": [{"type": "image", "path": "img/1.png"}, {"type": "text",
                                                                                                "text": "?"}]},
                          answer("blue")], "images": ["img/0.png"]}  # parts that name their files win
    (tmp_path / "named.jsonl").write_text(json.dumps(named), encoding="utf-8")
    assert read_dataset(tmp_path / "named.jsonl").samples[0].images == (str(tmp_path / "img" / "1.png"),)


def test_a_sharegpt_rows_system_column_becomes_its_system_message(tmp_path):
    """LLaMA-Factory's ShareGPT layout keeps the system prompt in a `system` column (data/README.md)."""
    save(tmp_path / "0.png", RED)
    row = {"conversations": [{"from": "human", "value": "<image>Describe."}, {"from": "gpt", "value": "a circle"}],
           "images": ["0.png"], "system": "You are a shape expert."}
    (tmp_path / "data.json").write_text(json.dumps([row]), encoding="utf-8")
    [sample] = read_dataset(tmp_path / "data.json").samples
    assert sample.messages[0] == {"role": "system", "content": [{"type": "text", "text": "You are a shape expert."}]}
    assert [m["role"] for m in sample.messages] == ["system", "user", "assistant"]


def _hub_parquet(folder, columns: dict, features: dict, rows: list, name: str = "train-00000-of-00001.parquet") -> None:
    """A Parquet file exactly as `datasets` writes one to the Hub: data/train-00000-of-00001.parquet, Image values as
    struct{bytes, path}, content parts as struct{index, text, type} with nulls, its features in the schema metadata."""
    pa = pytest.importorskip("pyarrow")
    parquet = pytest.importorskip("pyarrow.parquet")
    schema = pa.schema(list(columns.items())).with_metadata(
        {"huggingface": json.dumps({"info": {"features": features}})})
    (folder / "data").mkdir(parents=True, exist_ok=True)
    parquet.write_table(pa.Table.from_pylist(rows, schema=schema), folder / "data" / name)
    (folder / "README.md").write_text("---\nlicense: mit\n---\n")


def test_trls_vision_layout_and_an_imagefolder_as_the_hub_keeps_them_in_parquet(tmp_path):
    """TRL's conversational vision layout (messages + images, e.g. HuggingFaceH4/llava-instruct-mix-vsft) and an
    imagefolder pushed to the Hub (image + text) are Parquet with the pictures inside: both were refused ("holds no
    images and no dataset file")."""
    pa = pytest.importorskip("pyarrow")
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    part = pa.struct([("index", pa.int64()), ("text", pa.string()), ("type", pa.string())])
    message = pa.struct([("content", pa.list_(part)), ("role", pa.string())])
    colours = {"red": RED, "green": GREEN, "blue": BLUE}
    trl = [{"messages": [{"role": "user", "content": [{"index": 0, "text": None, "type": "image"},
                                                      {"index": None, "text": PROMPT, "type": "text"}]},
                         {"role": "assistant", "content": [{"index": None, "text": name, "type": "text"}]}],
            "images": [{"bytes": picture_bytes(colour), "path": None}]} for name, colour in colours.items()]
    _hub_parquet(tmp_path / "trl", {"messages": pa.list_(message), "images": pa.list_(image)},
                 {"messages": {"_type": "List"}, "images": {"feature": {"_type": "Image"}, "_type": "List"}}, trl)
    report = read_dataset(tmp_path / "trl")
    assert (report.format, len(report.samples), report.problems) == ("OpenAI messages", 3, [])
    assert [colour_of(sample.images[0]) for sample in report.samples] == list(colours.values())
    assert [sample.messages[1]["content"][0]["text"] for sample in report.samples] == list(colours)
    folder = [{"image": {"bytes": picture_bytes(colour), "path": f"{name}.png"}, "text": f"a {name} square"}
              for name, colour in colours.items()] + [{"image": {"bytes": b"not a picture", "path": "x.png"},
                                                       "text": "broken"}]
    _hub_parquet(tmp_path / "hub", {"image": image, "text": pa.string()},
                 {"image": {"_type": "Image"}, "text": {"dtype": "string", "_type": "Value"}}, folder)
    report = read_dataset(tmp_path / "hub")
    assert report.format.startswith("Hugging Face imagefolder") and len(report.samples) == 3
    assert report.problems[0].line == 4 and "is not an image vlmchat can read" in report.problems[0].message
    (tmp_path / "arrow").mkdir()
    (tmp_path / "arrow" / "data-00000-of-00001.arrow").write_bytes(b"")
    (tmp_path / "arrow" / "state.json").write_text("{}")
    with pytest.raises(InputError, match=r"save_to_disk folder .*load_from_disk\(FOLDER\)\.to_parquet"):
        read_dataset(tmp_path / "arrow")
    (tmp_path / "dict" / "train").mkdir(parents=True)  # a DatasetDict's save_to_disk: one folder per split
    (tmp_path / "dict" / "dataset_dict.json").write_text('{"splits": ["train"]}')
    with pytest.raises(InputError, match=r"save_to_disk folder .*load_from_disk\(FOLDER\)\['train'\]\.to_parquet"):
        read_dataset(tmp_path / "dict")


def test_a_dataset_in_several_parquet_shards_is_one_format(tmp_path):
    """The Hub splits a larger dataset into train-00000-of-00002.parquet, train-00001-of-00002.parquet: the check
    named the same format once per shard ("Hugging Face imagefolder (train-00000…) + Hugging Face imagefolder
    (train-00001…)")."""
    pa = pytest.importorskip("pyarrow")
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    for shard, (name, colour) in enumerate({"red": RED, "blue": BLUE}.items()):
        _hub_parquet(tmp_path, {"image": image, "text": pa.string()},
                     {"image": {"_type": "Image"}, "text": {"dtype": "string", "_type": "Value"}},
                     [{"image": {"bytes": picture_bytes(colour), "path": f"{name}.png"}, "text": f"a {name} square"}],
                     name=f"train-0000{shard}-of-00002.parquet")
    named = "Hugging Face imagefolder (2 files: train-00000-of-00002.parquet … train-00001-of-00002.parquet)"
    for given in (tmp_path, tmp_path / "data"):  # the data/ folder itself was "several dataset files: give one"
        report = read_dataset(given)
        assert (len(report.samples), report.format) == (2, named)


def test_openai_answers_with_weight_0_stay_in_the_conversation_out_of_the_loss(tmp_path, demo_model_path):
    """OpenAI's multi-turn rows mark an answer not to be learned with "weight": 0 (its guide's own example: a plain
    answer kept as context); vlmchat trained on it (format reviewer). Now it is context only, the preview says so,
    and a weight other than 0/1, or on a user message, or on every answer, is a problem of that row."""
    from transformers import AutoProcessor

    from vlmchat.finetune.collate import encode_example

    def row(first_weight, last_weight=1, user_weight=None):
        user = {"role": "user", "content": [{"type": "text", "text": "What colour?"},
                                            {"type": "image_url", "image_url": {"url": data_url(RED)}}]}
        if user_weight is not None:
            user["weight"] = user_weight
        return {"messages": [{"role": "system", "content": "You name colours."}, user,
                             {"role": "assistant", "content": "wrong answer, do not train", "weight": first_weight},
                             {"role": "user", "content": "Try again: what colour?"},
                             {"role": "assistant", "content": "red", "weight": last_weight}]}

    rows = [row(0), row(1), row(2), row(0, 0), row(0, 1, user_weight=1), row(True)]
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    report = read_dataset(path)
    assert [s.source for s in report.samples] == ["train.jsonl:1", "train.jsonl:2"]
    problems = {p.line: p.message for p in report.problems}
    assert "'weight' is 2; only an assistant message may have one, and it is 0 (not learned) or 1" in problems[3]
    assert "every answer has weight 0, so nothing would be learned" in problems[4]
    assert "'weight' is 1; only an assistant message may have one" in problems[5]
    assert "'weight' is True" in problems[6]
    assert preview_rows(report)[0]["answer"] == "wrong answer, do not train (weight 0: not learned) / red"
    assert preview_rows(report)[1]["answer"] == "wrong answer, do not train / red"
    processor = AutoProcessor.from_pretrained(demo_model_path)
    skipped, both = (encode_example(processor, [load_image(s.images[0])], s.messages) for s in report.samples)
    learned = [processor.tokenizer.decode(e["labels"][e["labels"] != -100]) for e in (skipped, both)]
    assert "red" in learned[0] and "do not train" not in learned[0]
    assert "red" in learned[1] and "do not train" in learned[1]
    assert skipped["input_ids"].tolist() == both["input_ids"].tolist()  # the same conversation, other labels


def test_llama_factory_dataset_info_columns_tags_subfolders_and_alpaca_rows(tmp_path):
    """LLaMA-Factory's data/README.md: dataset_info.json names each dataset's file (relative to the dataset_dir,
    possibly in a subfolder), its `columns` and ShareGPT `tags`, and `formatting` (Alpaca by default); images are
    relative to the dataset_dir (its media_dir default). vlmchat read the index only to choose a file: custom
    columns were 'in no layout', a dataset in a subfolder was read as a kohya folder (format reviewer)."""
    data = tmp_path / "data"
    for index, colour in enumerate((RED, BLUE)):
        save(data / "pics" / f"{index}.png", colour)
    custom = [{"dialog": [{"speaker": "human", "text": "<image>What colour?"}, {"speaker": "bot", "text": "Red."}],
               "pics": ["pics/0.png"], "sys": "Name colours."}]
    (data / "sub").mkdir()
    (data / "sub" / "custom.json").write_text(json.dumps(custom), encoding="utf-8")
    alpaca = [{"instruction": "<image>What colour is it?", "input": "One word.", "output": "Blue.",
               "images": ["pics/1.png"]}]
    (data / "alpaca_mm.json").write_text(json.dumps(alpaca), encoding="utf-8")
    (data / "dpo.json").write_text(json.dumps([{"conversations": [], "chosen": {}, "rejected": {}}]), "utf-8")
    info = {
        "custom": {"file_name": "sub/custom.json", "formatting": "sharegpt",
                   "columns": {"messages": "dialog", "images": "pics", "system": "sys"},
                   "tags": {"role_tag": "speaker", "content_tag": "text", "user_tag": "human", "assistant_tag": "bot"}},
        "hub_only": {"hf_hub_url": "someone/some-dataset"},
    }
    (data / "dataset_info.json").write_text(json.dumps(info), encoding="utf-8")
    report = read_dataset(data)  # the folder: the one local dataset with images, in its subfolder
    assert not report.problems and len(report.samples) == 1
    (sample,) = report.samples
    assert [m["role"] for m in sample.messages] == ["system", "user", "assistant"]
    assert sample.messages[1]["content"] == [IMAGE, text("What colour?")] and sample.images == (str(data / "pics" / "0.png"),)
    assert read_dataset(data / "sub" / "custom.json").samples[0].images == sample.images  # the file itself, too

    info["alpaca"] = {"file_name": "alpaca_mm.json", "columns": {"prompt": "instruction", "query": "input",
                                                                 "response": "output", "images": "images"}}
    (data / "dataset_info.json").write_text(json.dumps(info), encoding="utf-8")
    with pytest.raises(InputError, match=r"registers several datasets with images \(sub/custom.json, alpaca_mm.json\)"):
        read_dataset(data)
    report = read_dataset(data / "alpaca_mm.json")
    assert report.format == "Alpaca (LLaMA-Factory)" and not report.problems
    (sample,) = report.samples
    assert sample.messages[0]["content"] == [IMAGE, text("What colour is it?\nOne word.")]
    assert sample.messages[1]["content"] == [text("Blue.")]
    assert_colour(sample.images[0], BLUE)

    info["dpo"] = {"file_name": "dpo.json", "formatting": "sharegpt", "ranking": True,
                   "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected"}}
    (data / "dataset_info.json").write_text(json.dumps(info), encoding="utf-8")
    with pytest.raises(InputError, match="registered in dataset_info.json as a preference dataset"):
        read_dataset(data / "dpo.json")


# Image paths as datasets made elsewhere write them (outside reviewer: each refused the whole dataset)

def llava_rows(images: list[str]) -> list[dict]:
    return [{"id": str(n), "image": image, "conversations": [{"from": "human", "value": "<image>\nDescribe the image."},
                                                            {"from": "gpt", "value": f"shape {n}"}]}
            for n, image in enumerate(images)]


def test_paths_of_another_machine_find_the_pictures_by_name_and_say_so(tmp_path):
    """Absolute paths of the machine the dataset was made on (POSIX and Windows), LLaVA's image folder apart from
    the JSON, and a name in another case (made on Windows or macOS): each picture found by its file name below the
    dataset's folder, and the report says how many."""
    save(tmp_path / "images" / "a.png", RED)
    save(tmp_path / "train2017" / "b.png", GREEN)
    save(tmp_path / "images" / "c.jpg", BLUE)
    save(tmp_path / "images" / "d.png", YELLOW)
    rows = llava_rows(["/home/alice/shapes/images/a.png", "b.png", "images/c.JPG", r"C:\Users\alice\shapes\d.png"])
    (tmp_path / "data.json").write_text(json.dumps(rows), encoding="utf-8")
    report = read_dataset(tmp_path)
    assert not report.problems and len(report.samples) == 4
    for sample, colour in zip(report.samples, (RED, GREEN, BLUE, YELLOW)):
        assert_colour(sample.images[0], colour)
    assert "4 pictures found by file name below the dataset's folder" in report.format
    assert "'/home/alice/shapes/images/a.png' -> " in report.format


def test_a_picture_found_nowhere_says_what_to_do(tmp_path):
    save(tmp_path / "images" / "a.png", RED)
    save(tmp_path / "x" / "same.png", GREEN)
    save(tmp_path / "y" / "same.png", BLUE)  # two of that name: neither is guessed
    rows = llava_rows(["/home/alice/gone.png", r"C:\data\gone.png", "same.png", "images/a.png"])
    (tmp_path / "data.json").write_text(json.dumps(rows), encoding="utf-8")
    report = read_dataset(tmp_path)
    assert len(report.samples) == 1 and len(report.problems) == 3
    posix, windows, twice = map(str, report.problems)
    assert "an absolute path of another machine? Make the image paths relative to the dataset file" in posix
    assert "is a Windows path of the machine the dataset was made on" in windows and "nor" not in windows
    assert "nor a file of that name below" in twice


def test_llavas_json_and_image_folder_side_by_side_are_read_from_their_folder(tmp_path):
    """LLaVA keeps json/llava_instruct_150k.json beside coco/train2017/ (given as --data_path and --image_folder):
    the folder was read as pictures without captions, and told to caption them."""
    save(tmp_path / "coco" / "train2017" / "000000033471.jpg", RED)
    save(tmp_path / "coco" / "train2017" / "000000052846.jpg", GREEN)
    (tmp_path / "json").mkdir()
    (tmp_path / "json" / "llava_instruct_150k.json").write_text(
        json.dumps(llava_rows(["000000033471.jpg", "000000052846.jpg"])), encoding="utf-8")
    report = read_dataset(tmp_path)
    assert len(report.samples) == 2 and not report.problems
    assert "json/llava_instruct_150k.json, the one dataset file in" in report.format
    # its json file given instead (README's own example): every picture "not found", the fix unsaid (format tester)
    problems = read_dataset(tmp_path / "json" / "llava_instruct_150k.json").problems
    assert len(problems) == 2 and all("give the folder holding both" in str(p) for p in problems)
    (tmp_path / "json" / "other.json").write_text("[]", encoding="utf-8")
    with pytest.raises(InputError, match="several below it .*give the one to train on"):
        read_dataset(tmp_path)


def test_dataset_info_naming_a_missing_file_says_which(tmp_path):
    (tmp_path / "dataset_info.json").write_text(json.dumps({"mine": {"file_name": "nope.json",
                                                                     "formatting": "sharegpt"}}), encoding="utf-8")
    with pytest.raises(InputError, match="registers nope.json, which is not in"):
        read_dataset(tmp_path)


def test_a_csv_dataset_that_dataset_info_registers_is_read_as_its_entry_says(tmp_path):
    """LLaMA-Factory loads .csv files too (as a registered file, or a registered folder of them): read with the
    entry's columns, an images cell being one path relative to the dataset_dir (it was refused: 'no layout')."""
    import csv

    (tmp_path / "pics").mkdir()
    (tmp_path / "shapes").mkdir()
    for index, colour in enumerate(("red", "blue")):
        Image.new("RGB", (32, 32), colour).save(tmp_path / "pics" / f"{index}.png")
    with open(tmp_path / "shapes" / "part-0.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["question", "answer", "picture"])
        writer.writerow(["<image>What colour is it?", "red", "pics/0.png"])
        writer.writerow(["<image>What colour is it?", "blue", "pics/1.png"])
    entry = {"formatting": "alpaca", "columns": {"prompt": "question", "response": "answer", "images": "picture"}}
    for registered in ("shapes", "shapes/part-0.csv"):
        (tmp_path / "dataset_info.json").write_text(json.dumps({"colours": {"file_name": registered, **entry}}))
        report = read_dataset(tmp_path, "Describe the image.")
        assert report.format.startswith("Alpaca") and not report.problems
        assert [s.messages[-1]["content"][0]["text"] for s in report.samples] == ["red", "blue"]
        assert [s.images for s in report.samples] == [(str(tmp_path / "pics" / "0.png"),),
                                                       (str(tmp_path / "pics" / "1.png"),)]
