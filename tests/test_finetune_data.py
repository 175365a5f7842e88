"""Fine-tune datasets (the .txt folder, ShareGPT and OpenAI-messages layouts, checks with file/line), answer-only
labels, dynamic padding, the setup. The other layouts are in test_finetune_layouts.py."""

import json
import random

import pytest

from vlmchat.errors import InputError
from vlmchat.finetune.datasets import dataset_hash, preview_rows, read_dataset, split
from vlmchat.finetune.setup import choose_setup
from vlmchat.finetune.spec import JobSpec
from vlmchat.models.plan import ModelSize


def write_caption_folder(folder, count=6, seed=0, language="es"):
    """`count` demo pictures with their captions as .txt files (the kohya convention)."""
    from vlmchat.demo.dialogue import answer
    from vlmchat.demo.shapes import draw_picture

    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    for index in range(count):
        picture = draw_picture(rng)
        picture.image.save(folder / f"{index:03d}.png")
        (folder / f"{index:03d}.txt").write_text(answer("caption", picture.colour, picture.shape, language), "utf-8")
    return folder


def test_caption_folder_reads_each_image_with_its_caption_and_lists_problems(tmp_path):
    folder = write_caption_folder(tmp_path / "data", 4)
    (folder / "003.txt").unlink()
    (folder / "002.txt").write_text("  ")
    (folder / "orphan.txt").write_text("un cuadrado azul")
    (folder / "broken.png").write_bytes(b"not a png")
    (folder / "broken.txt").write_text("un círculo rojo")
    report = read_dataset(folder)
    assert report.format == "image folder with .txt captions"
    assert [s.source for s in report.samples] == ["000.png", "001.png"]
    sample = report.samples[0]
    assert sample.messages[0]["content"] == [{"type": "image"}, {"type": "text", "text": "Describe the image."}]
    assert sample.messages[1]["content"][0]["text"].startswith("un ")
    problems = {str(p) for p in report.problems}
    assert "003.png: no caption file 003.txt (or 003.caption)" in problems
    assert "002.txt:1: empty caption" in problems
    assert "orphan.txt: caption without an image of the same name" in problems
    assert any(p.startswith("broken.png") and "not an image" in p for p in problems)
    with pytest.raises(InputError, match="tick .Skip rows with problems. \(--skip-invalid\)"):
        report.require_usable()
    assert len(report.require_usable(skip_invalid=True)) == 2
    # pictures without any caption: where to make them (it said "no caption file" per picture and nothing more)
    for caption in folder.glob("*.txt"):
        caption.unlink()
    with pytest.raises(InputError, match="caption them first, `launch.py caption FOLDER --format txt` or the Caption tab"):
        read_dataset(folder).require_usable()


def test_caption_folder_pairs_every_image_with_its_caption_as_kohya_does(tmp_path):
    """a.jpg and a.png both take a.txt (kohya pairs by name without the extension); a caption saved by Notepad
    (UTF-8 with a byte-order mark) is the caption without the mark."""
    folder = write_caption_folder(tmp_path / "data", 1)
    (folder / "000.png").rename(folder / "000.PNG")
    (folder / "000.txt").write_bytes("\ufeffun círculo rojo\r\n".encode("utf-8"))
    write_caption_folder(tmp_path / "other", 1)
    (tmp_path / "other" / "000.png").rename(folder / "000.jpg")
    report = read_dataset(folder)
    assert sorted(s.source for s in report.samples) == ["000.PNG", "000.jpg"] and not report.problems
    assert {s.messages[1]["content"][0]["text"] for s in report.samples} == {"un círculo rojo"}


def test_a_llama_factory_data_folder_is_read_beside_its_dataset_info(tmp_path):
    """LLaMA-Factory's data/README.md: every dataset is registered in dataset_info.json beside it."""
    write_caption_folder(tmp_path / "data" / "mllm_demo_data", 1)
    rows = [{"messages": [{"role": "user", "content": "<image>What is it?"}, {"role": "assistant", "content": "uno"}],
             "images": ["mllm_demo_data/000.png"]}]
    (tmp_path / "data" / "mllm_demo.json").write_text(json.dumps(rows), encoding="utf-8")
    (tmp_path / "data" / "dataset_info.json").write_text(json.dumps({"mllm_demo": {
        "file_name": "mllm_demo.json", "formatting": "sharegpt",
        "columns": {"messages": "messages", "images": "images"}}}), encoding="utf-8")
    report = read_dataset(tmp_path / "data")
    assert report.format == "ShareGPT (LLaMA-Factory)" and len(report.samples) == 1


def test_sharegpt_rows_are_checked_with_their_line_numbers(tmp_path):
    write_caption_folder(tmp_path / "img", 2)
    rows = [
        {"messages": [{"role": "user", "content": "<image>What is it?"}, {"role": "assistant", "content": "un círculo"}],
         "images": ["img/000.png"]},
        {"messages": [{"role": "user", "content": "<image><image>Two?"}, {"role": "assistant", "content": "sí"}],
         "images": ["img/000.png"]},
        {"conversations": [{"from": "human", "value": "<image>Hi"}, {"from": "human", "value": "again"}],
         "images": ["img/001.png"]},
        {"messages": [{"role": "user", "content": "<image>Hi"}, {"role": "assistant", "content": " "}],
         "images": ["img/001.png"]},
        {"messages": [{"role": "user", "content": "<image>Hi"}, {"role": "assistant", "content": "ok"}],
         "images": ["img/missing.png"]},
    ]
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n{not json\n", encoding="utf-8")
    report = read_dataset(path)
    assert report.format == "ShareGPT (LLaMA-Factory)"
    assert len(report.samples) == 1 and report.samples[0].images[0] == str(tmp_path / "img" / "000.png")
    assert report.samples[0].messages[0]["content"] == [{"type": "image"}, {"type": "text", "text": "What is it?"}]
    problems = [str(p) for p in report.problems]
    assert "data.jsonl:2: 2 <image> placeholders but 1 image; they must match" in problems
    assert any(p.startswith("data.jsonl:3: roles must alternate") for p in problems)
    assert "data.jsonl:4: empty answer in message 2" in problems
    assert any(p.startswith("data.jsonl:5:") and "was not found" in p for p in problems)
    assert any(p.startswith("data.jsonl:6: not valid JSON") for p in problems)
    assert [p.line for p in report.problems] == [2, 3, 4, 5, 6]  # in file order, the missing image (5) included
    path.write_text("\n".join(json.dumps(r) for r in rows[1:2] + rows[3:]) + "\n", encoding="utf-8")
    none = read_dataset(path)  # no usable row: the layout is still named, from the rows' shape
    assert none.format == "ShareGPT (LLaMA-Factory)" and not none.samples


def test_openai_messages_with_image_parts(tmp_path):
    write_caption_folder(tmp_path, 1)
    row = {"messages": [
        {"role": "system", "content": "Answer in Spanish."},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "000.png"}},
                                     {"type": "text", "text": "Describe"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "un cuadrado"}]},
        {"role": "user", "content": [{"type": "text", "text": "Color?"}]},
        {"role": "assistant", "content": "rojo"}]}
    bad = {"messages": [{"role": "user", "content": [{"type": "image", "image": "https://x/y.png"}]},
                        {"role": "assistant", "content": "no"}]}
    path = tmp_path / "chat.jsonl"
    path.write_text(json.dumps(row) + "\n" + json.dumps(bad) + "\n", encoding="utf-8")
    report = read_dataset(path)
    assert report.format == "OpenAI messages" and len(report.samples) == 1
    assert [m["role"] for m in report.samples[0].messages] == ["system", "user", "assistant", "user", "assistant"]
    assert "URLs" in str(report.problems[0]) and report.problems[0].line == 2
    assert preview_rows(report)[0]["answer"] == "un cuadrado / rojo"


def test_split_and_hash_are_deterministic(tmp_path):
    report = read_dataset(write_caption_folder(tmp_path / "d", 10))
    train, val = split(report.samples, 0.8, seed=3)
    assert (len(train), len(val)) == (8, 2) and split(report.samples, 0.8, seed=3) == (train, val)
    assert dataset_hash(report.samples) == dataset_hash(list(report.samples))
    assert split(report.samples[:1], 0.8, 0) == (report.samples[:1], [])


def test_answer_only_labels_match_the_demo_recipe_and_padding_is_dynamic(demo_model_path):
    import torch
    from transformers import AutoProcessor

    from vlmchat.demo import dialogue
    from vlmchat.demo.build import encode_conversation
    from vlmchat.demo.shapes import draw_picture
    from vlmchat.finetune.collate import collate, encode_example

    processor = AutoProcessor.from_pretrained(demo_model_path)
    rng = random.Random(0)
    examples = []
    for _ in range(6):
        picture = draw_picture(rng)
        messages = dialogue.conversation(rng, picture.colour, picture.shape, "es")
        mine = encode_example(processor, [picture.image], messages)
        reference = encode_conversation(processor, picture.image, messages)
        assert torch.equal(mine["labels"], reference["labels"])  # answers + end token only, no image/prompt
        learned = processor.tokenizer.decode(mine["labels"][mine["labels"] != -100])
        assert "Describe" not in learned and "<image>" not in learned
        examples.append(mine)
    batch = collate(examples, processor.tokenizer.pad_token_id)
    assert batch["input_ids"].shape[1] == max(len(e["input_ids"]) for e in examples) < 512
    assert batch["pixel_values"].shape[0] == 6
    with pytest.raises(ValueError, match="over max_length"):
        encode_example(processor, [picture.image], messages, max_length=10)


def test_setup_on_cpu_uses_none_of_the_gpu_tricks_and_says_why():
    setup = choose_setup(on_gpu=False, quantization="4bit", optimizer="paged_adamw_8bit")
    assert (setup.dtype, setup.bits, setup.gradient_checkpointing, setup.optimizer) == ("float32", 32, False, "adamw")
    assert "needs a CUDA GPU" in setup.reasons["precision"] and "ignored on the CPU" in setup.reasons["optimizer"]


@pytest.mark.parametrize("free, bits, tight", [(80.0, 16, False), (12.0, 4, True), (26.0, 16, True)])
def test_setup_on_gpu_follows_the_quantization_plan(free, bits, tight):
    size = ModelSize("Llama-3.2-11B-Vision", language_b=9.8, vision_b=0.9, embeddings_b=1.05)
    setup = choose_setup(on_gpu=True, free_gib=free, size=size, tokens=1024, batch_size=1)
    assert setup.bits == bits, setup.reasons
    assert setup.gradient_checkpointing is tight and (setup.optimizer == "paged_adamw_8bit") is tight
    assert ("QLoRA" in setup.reasons["precision"]) is (bits == 4)


def test_job_spec_validates_and_round_trips(tmp_path):
    with pytest.raises(InputError, match="not a valid adapter name"):
        JobSpec(name="../evil", data="x")
    with pytest.raises(InputError, match="optimizer must be one of"):
        JobSpec(name="ok", data="x", optimizer="sgd")
    spec = JobSpec(name="ok", data="/d", max_steps=5, learning_rate=3e-3)
    (tmp_path / "job.json").write_text(spec.to_json())
    assert JobSpec.from_file(tmp_path / "job.json") == spec
    assert "--max-steps 5" in spec.command() and "--learning-rate 0.003" in spec.command()
    # an option that is on by default, turned off, is in the command (it was left out: the command evaluated)
    quiet = JobSpec(name="ok", data="/d", evaluate=False, overwrite=True)
    assert "--no-evaluate" in quiet.command() and "--overwrite" in quiet.command()
    import shlex

    from vlmchat.cli import _parse

    parsed = _parse(shlex.split(quiet.command())[2:])  # the command as the CLI reads it
    assert (parsed.command, parsed.evaluate, parsed.overwrite) == ("finetune", False, True)
    # started with a settings file of its own: the command reads it again (adapters, outputs, the model's paths)
    own = JobSpec(name="ok", data="/d", settings_file=str(tmp_path / "mine.toml"))
    assert _parse(shlex.split(own.command())[2:]).settings == str(tmp_path / "mine.toml")


def test_kohya_caption_files_with_the_dot_caption_extension_are_read(tmp_path):
    """sd-scripts' default caption extension is .caption: such a folder read as pictures with no caption at all, and
    the hint said to caption them from scratch (fine-tune reviewer)."""
    folder = write_caption_folder(tmp_path / "kohya", count=4)
    for index, text in enumerate(sorted(folder.glob("*.txt"))):
        if index % 2:
            text.rename(text.with_suffix(".caption"))
    (folder / "004.png").write_bytes((folder / "000.png").read_bytes())
    report = read_dataset(folder)
    assert report.format == "image folder with .txt captions" and len(report.samples) == 4
    assert [str(p) for p in report.problems] == ["004.png: no caption file 004.txt (or 004.caption)"]
    # both beside one picture: which one trained was not said (blind tester)
    (folder / "001.txt").write_text("a caption of its own", "utf-8")
    report = read_dataset(folder)
    assert ("(1 picture with both a .txt and a .caption file, such as 001.txt: the .txt is used, .caption left out)"
            in report.format)
    assert [row["answer"] for row in preview_rows(report) if row["source"] == "001.png"] == ["a caption of its own"]


def test_a_caption_file_that_is_not_utf8_is_a_problem_not_mojibake(tmp_path):
    """A Latin-1 caption trained as "caf\ufffd" and the check said nothing (blind tester). kohya's trainer refuses
    such a file too; Notepad's UTF-8 with a BOM is read."""
    folder = write_caption_folder(tmp_path / "data", 3)
    (folder / "000.txt").write_bytes("a red circle\nun caf\u00e9".encode("latin-1"))
    (folder / "001.txt").write_bytes("\ufeffun caf\u00e9 rouge".encode("utf-8"))
    report = read_dataset(folder)
    assert [s.source for s in report.samples] == ["001.png", "002.png"]
    assert preview_rows(report)[0]["answer"] == "un caf\u00e9 rouge"
    assert [str(p) for p in report.problems] == [
        "000.txt:2: not UTF-8 text (byte 0xE9; as Windows-1252 it reads 'a red circle\\nun caf\u00e9'): save the "
        "caption as UTF-8, as kohya's trainer and TagGUI read captions (e.g. iconv -f cp1252 -t utf-8)"]


def test_kohya_repeat_folders_are_read_and_the_check_says_their_counts_are_not_applied(tmp_path):
    """kohya's trainer repeats 10_shapes/ ten times an epoch; vlmchat counts each picture once: said, not silent."""
    write_caption_folder(tmp_path / "data" / "10_shapes", 3)
    write_caption_folder(tmp_path / "data" / "2_more", 2, seed=1)
    report = read_dataset(tmp_path / "data")
    assert len(report.samples) == 5 and not report.problems
    assert "kohya repeat folders 10_shapes, 2_more: their counts are not applied" in report.format
    assert "repeat" not in read_dataset(write_caption_folder(tmp_path / "plain", 2)).format


def test_a_caption_file_of_short_lines_trains_its_first_line_as_kohya_does(tmp_path):
    """A caption then its tags, one a line, are alternatives to kohya's trainer (it learns the first line) and
    references to Evaluate; the fine-tune learned both lines as one two-line answer (format reviewer). A long
    multi-paragraph description stays one answer, as Evaluate keeps it one reference."""
    folder = write_caption_folder(tmp_path / "data", 3)
    (folder / "000.txt").write_text("a red circle\r\nred, circle, shape, simple background\r\n", "utf-8")
    paragraph = "A detailed description of the picture that goes on. " * 5
    (folder / "001.txt").write_text(f"{paragraph}\n\n{paragraph}", "utf-8")
    report = read_dataset(folder)
    answers = [row["answer"] for row in preview_rows(report)]
    assert answers[0] == "a red circle" and answers[1] == f"{paragraph}\n\n{paragraph}".strip()
    assert ("(1 caption file with one short caption a line: the first line is learned, as kohya's trainer does; "
            "Evaluate takes each line as a reference)") in report.format
    assert "short caption a line" not in read_dataset(write_caption_folder(tmp_path / "plain", 2)).format


def test_a_missing_picture_under_images_is_named_once(tmp_path):
    """It said 'neither …/images/x.png nor …/images/images/x.png exists': the second path read like a bug."""
    rows = [{"messages": [{"role": "user", "content": "<image>Colour?"}, {"role": "assistant", "content": "red"}],
             "images": ["images/x.png"]}]
    (tmp_path / "data.jsonl").write_text(json.dumps(rows[0]) + "\n", encoding="utf-8")
    problem = str(read_dataset(tmp_path / "data.jsonl").problems[0])
    assert f"{tmp_path / 'images' / 'x.png'} does not exist" in problem and "images/images" not in problem


def test_a_zip_holding_only_a_zip_is_unpacked_one_level_further(tmp_path):
    """It said "'kohya.zip' is neither a folder nor a .json/... file" (blind tester): a zip zipped again."""
    import zipfile

    from conftest import write_settings
    from vlmchat.finetune.uploads import resolve_dataset, store_upload
    from vlmchat.settings import load_settings

    settings = load_settings(write_settings(tmp_path))
    folder = write_caption_folder(tmp_path / "kohya", 2)
    with zipfile.ZipFile(tmp_path / "kohya.zip", "w") as zipped:
        for file in folder.iterdir():
            zipped.write(file, f"kohya/{file.name}")
    with zipfile.ZipFile(tmp_path / "nested.zip", "w") as zipped:
        zipped.write(tmp_path / "kohya.zip", "kohya.zip")
    unpacked = resolve_dataset(store_upload(tmp_path / "nested.zip", settings), settings)
    assert unpacked.name == "kohya" and len(read_dataset(unpacked).samples) == 2
    assert sorted(p.name for p in unpacked.parent.iterdir()) == ["kohya"]  # the inner zip is not kept
    with pytest.raises(InputError, match="'kohya.zip' is a zip where a folder or a dataset file is read; unpack it"):
        read_dataset(tmp_path / "kohya.zip")


def test_an_adapters_path_that_is_a_file_is_refused_before_training(tmp_path):
    """It trained, then failed with "An adapter named 'z' already exists" (blind tester)."""
    (tmp_path / "adapters").write_text("not a folder")
    spec = JobSpec(name="z", data="/d", adapters_dir=str(tmp_path / "adapters"), settings_file="/s/mine.toml")
    with pytest.raises(InputError, match=r"The adapters folder .*adapters is a file, not a folder; set adapters in "
                                         r"\[paths\] of /s/mine.toml to a folder"):
        spec.refuse_existing_adapter()


def test_a_zip_holding_only_a_readme_is_said_to_hold_no_dataset(tmp_path):
    """Its one file was taken for the dataset: "'readme.md' is neither a folder nor a .json/... file" (blind tester)."""
    from vlmchat.finetune.uploads import resolve_dataset

    upload = tmp_path / "only-1a2b3c"
    upload.mkdir()
    (upload / "readme.md").write_text("hi", encoding="utf-8")
    folder = resolve_dataset("upload:only-1a2b3c", None, tmp_path)
    assert folder == upload
    with pytest.raises(InputError, match="holds no images and no dataset file"):
        read_dataset(str(folder), "Describe the image.")
    (upload / "readme.md").rename(upload / "data.jsonl")  # one dataset file alone is the dataset
    assert resolve_dataset("upload:only-1a2b3c", None, tmp_path) == upload / "data.jsonl"


@pytest.mark.parametrize("typed", ['"{}"', "'{}'", ' "{}" '])
def test_a_path_typed_in_quotes_is_the_path(tmp_path, typed):
    """Windows' "Copy as path" puts a path in quotes: '"C:\\...\\set.jsonl"' does not exist (blind tester)."""
    from vlmchat.finetune.uploads import resolve_dataset

    assert resolve_dataset(typed.format(tmp_path / "set.jsonl"), None, tmp_path) == tmp_path / "set.jsonl"


def test_setup_on_a_gpu_too_small_even_for_4bit_chooses_qlora_and_says_so_without_the_chat_plans_offload():
    """Nothing fits even in 4-bit: a fine-tune takes the least it can, QLoRA, and says why in its own words (the chat
    plan's refusal spoke of offloading layers to system RAM with "0.0 GiB free", which a fine-tune never does)."""
    size = ModelSize("Llama-3.2-11B-Vision", language_b=9.8, vision_b=0.9, embeddings_b=1.05)
    setup = choose_setup(on_gpu=True, free_gib=6.0, size=size, tokens=1024, batch_size=1)
    assert setup.bits == 4, setup.reasons
    assert setup.reasons["precision"].startswith("QLoRA (4-bit nf4, bf16 compute): nothing fits in 6.0 GiB free, not "
                                                 "even 4-bit (~")
    assert "RAM" not in setup.reasons["precision"] and "offload" not in setup.reasons["precision"]
