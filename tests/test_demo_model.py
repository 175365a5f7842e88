"""The shipped demo model: a real transformers model that sees colour and shape."""

import random

import pytest


@pytest.fixture(scope="module")
def demo(demo_model_path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    return (AutoModelForImageTextToText.from_pretrained(demo_model_path),
            AutoProcessor.from_pretrained(demo_model_path))


def test_loads_through_the_auto_classes_with_a_chat_template(demo):
    model, processor = demo
    assert type(model).__name__ == "LlavaForConditionalGeneration"
    assert processor.chat_template
    text = processor.apply_chat_template([{"role": "user", "content": [{"type": "image"}]}],
                                         add_generation_prompt=True, tokenize=False)
    assert "<image>" in text and text.endswith("<|assistant|>")


def test_weights_are_small_safetensors(demo_model_path):
    weights = list(demo_model_path.glob("*.safetensors"))
    assert weights and not list(demo_model_path.glob("*.bin"))
    assert sum(w.stat().st_size for w in weights) < 10 * 2**20


def test_captions_held_out_pictures_correctly(demo):
    from vlmchat.demo.measure import caption_accuracy
    from vlmchat.demo.heldout import heldout_pictures

    pictures = heldout_pictures(48, seed=2026)  # fresh pictures: a seed no build or benchmark uses
    assert caption_accuracy(*demo, pictures) >= 0.95


def test_answers_colour_and_shape_questions(demo):
    from vlmchat.demo.measure import answer_batch
    from vlmchat.demo.heldout import heldout_pictures

    pictures = heldout_pictures(24, seed=99)
    images = [p[0] for p in pictures]
    colours = answer_batch(*demo, images, "What color is the shape?")
    shapes = answer_batch(*demo, images, "What shape is this?")
    right = sum(c.strip() == col and s.strip() == shp for c, s, (_, col, shp) in zip(colours, shapes, pictures))
    assert right >= 0.9 * len(pictures)


def test_training_recipe_is_deterministic(tmp_path):
    from vlmchat.demo.build import build_base

    def tiny_build(name):
        folder = build_base(tmp_path / name, steps=3, examples=70, vision_steps=2, seed=5, polish_steps=2,
                            polish_examples=40, progress=lambda _: None)
        return (folder / "model.safetensors").read_bytes()

    random.seed(123)  # global state must not matter
    first = tiny_build("a")
    random.seed(456)
    assert tiny_build("b") == first


def test_build_demo_refuses_a_folder_that_holds_other_files(tmp_path, demo_settings):
    """build-demo replaces the folder it writes: `--output` naming a folder of other files emptied it (newcomer
    reviewer: a thesis.txt gone). It is refused before any training; a new folder or a model folder is taken."""
    from vlmchat.demo.build import build_demo
    from vlmchat.errors import InputError

    (tmp_path / "thesis.txt").write_text("years of work")
    with pytest.raises(InputError, match="holds other files"):
        build_demo(demo_settings, steps=1, output=str(tmp_path))
    assert (tmp_path / "thesis.txt").read_text() == "years of work"
