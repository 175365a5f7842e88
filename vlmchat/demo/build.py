"""Build the embedded demo VLM from nothing: tokenizer, processor, a tiny LLaVA, its training.

Run with `python launch.py build-demo`. Everything is seeded, so the same code on the same
machine gives the same weights. The result is an ordinary transformers folder that loads with
`AutoModelForImageTextToText` + `AutoProcessor`, exactly like a model from the hub.
"""

from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path
from typing import Callable

from . import dialogue
from ..finetune.recipe import RECIPE_FILE
from .measure import Progress, caption_accuracy
from .shapes import COLOURS, SHAPES, draw_picture

# The demo's own fine-tune recipe, saved beside its weights (see vlmchat/finetune/recipe.py): a 1 M-parameter
# model needs a 5x higher LoRA rate than a 2-11 B one (measured: benchmarks/finetune_sizes.py).
DEMO_RECIPE = {"learning_rate": 1e-3, "seconds_per_sample_cpu": 0.05,
               "note": "fine-tune defaults for the embedded demo model; values given explicitly win",
               # It knows only pictures: Chat asks for one instead of inventing an answer. It saw one picture per
               # chat in training: a new picture starts the model's context afresh (the saved chat keeps all).
               "needs_image": True, "one_picture_per_chat": True}
IMAGE_SIZE = 64
PATCH_SIZE = 8
SPECIAL_TOKENS = ["<pad>", "<s>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>", "<image>"]

CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "<|{{ message['role'] }}|>"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}<image>"
    "{%- elif part['type'] == 'text' -%}{{ part['text'] }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}<|end|>"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|assistant|>{%- endif -%}"
)



def build_processor():
    """A byte-level BPE tokenizer trained on the demo's texts, and the LLaVA processor around it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlavaProcessor, PreTrainedTokenizerFast
    from transformers.models.llava.image_processing_pil_llava import LlavaImageProcessorPil

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1024, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(dialogue.corpus() * 4, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<s>",
        eos_token="<|end|>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": "<image>"},
        padding_side="left",
        model_max_length=1024,
    )
    # Pad to a white square (mean 1.0 makes the pad colour white), so shapes keep their aspect.
    image_processor = LlavaImageProcessorPil(
        do_pad=True,
        size={"shortest_edge": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        image_mean=[1.0, 1.0, 1.0],
        image_std=[0.5, 0.5, 0.5],
    )
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=CHAT_TEMPLATE,
    )


def build_model(processor, seed: int = 0):
    """A tiny LLaVA (CLIP vision tower + Llama language model) with random weights."""
    import torch
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    tok = processor.tokenizer
    vision = CLIPVisionConfig(
        image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, hidden_size=96, intermediate_size=256,
        num_hidden_layers=3, num_attention_heads=4,
    )
    text = LlamaConfig(
        vocab_size=len(tok), hidden_size=128, intermediate_size=320, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=1024,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True,
    )
    config = LlavaConfig(
        vision_config=vision, text_config=text, image_token_index=processor.image_token_id,
        image_seq_length=(IMAGE_SIZE // PATCH_SIZE) ** 2, vision_feature_layer=-1,
        vision_feature_select_strategy="default", tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.bos_token_id = tok.bos_token_id
    model.generation_config.max_new_tokens = 32
    model.generation_config.do_sample = False
    return model


def encode_conversation(processor, image, messages: list[dict]) -> dict:
    """Token ids, labels (answer tokens only) and pixel values of one training conversation."""
    text = processor.apply_chat_template(messages, tokenize=False)
    batch = processor(images=[image], text=text, return_tensors="pt")
    ids = batch["input_ids"][0]
    tok = processor.tokenizer
    assistant = tok.convert_tokens_to_ids("<|assistant|>")
    end = tok.eos_token_id
    labels = ids.clone().fill_(-100)
    inside = False
    for i, token in enumerate(ids.tolist()):
        if inside:
            labels[i] = token
            inside = token != end
        elif token == assistant:
            inside = True
    return {"input_ids": ids, "labels": labels, "pixel_values": batch["pixel_values"][0]}


def make_examples(processor, count: int, seed: int, language: str = "en", placed: float = 0.0) -> list[dict]:
    """`count` encoded training conversations about freshly drawn pictures (`placed`: see `draw_picture`)."""
    rng = random.Random(seed)
    examples = []
    for _ in range(count):
        picture = draw_picture(rng, placed=placed)
        messages = dialogue.conversation(rng, picture.colour, picture.shape, language)
        example = encode_conversation(processor, picture.image, messages)
        example["classes"] = (COLOURS.index(picture.colour), SHAPES.index(picture.shape))
        examples.append(example)
    return examples


def collate(examples: list[dict], pad_id: int) -> dict:
    """Right-pad a batch to its own longest sequence (no fixed length)."""
    import torch

    from ..finetune.collate import pad_batch

    pixels = torch.stack([e["pixel_values"] for e in examples])
    return {**pad_batch(examples, pad_id), "pixel_values": pixels}


def pretrain_vision(model, examples: list[dict], steps: int, seed: int, progress: Progress = print) -> None:
    """Stage 1: teach the vision tower colour and shape directly, through a throw-away linear head.

    Learning shape only through the language model's loss is very slow from scratch; real VLMs
    start from a pretrained vision encoder, and this is ours.
    """
    import torch

    tower = model.model.vision_tower
    heads = torch.nn.Linear(tower.config.hidden_size, len(COLOURS) + len(SHAPES))
    params = list(tower.parameters()) + list(heads.parameters())
    optimizer = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01)
    generator = random.Random(seed)
    tower.train()
    for step in range(steps):
        batch = generator.sample(examples, 64)
        pixels = torch.stack([e["pixel_values"] for e in batch])
        colours, shapes = torch.tensor([e["classes"] for e in batch]).T
        logits = heads(tower(pixel_values=pixels).last_hidden_state.mean(dim=1))
        loss = (torch.nn.functional.cross_entropy(logits[:, :len(COLOURS)], colours)
                + torch.nn.functional.cross_entropy(logits[:, len(COLOURS):], shapes))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step % 200 == 0 or step == steps - 1:
            progress(f"vision pretraining step {step + 1}/{steps}  loss {loss.item():.4f}")


def train(model, examples: list[dict], pad_id: int, steps: int, batch_size: int, lr: float,
          seed: int, progress: Progress = print, parameters=None) -> float:
    """AdamW with warmup and cosine decay; returns the mean loss of the last 50 steps."""
    import torch

    generator = random.Random(seed)
    params = [p for p in (parameters if parameters is not None else model.parameters()) if p.requires_grad]
    vision = {id(p) for p in model.model.vision_tower.parameters()} if parameters is None else set()
    optimizer = torch.optim.AdamW([
        {"params": [p for p in params if id(p) not in vision], "lr": lr},
        # the pretrained vision tower only fine-tunes gently
        {"params": [p for p in params if id(p) in vision], "lr": lr / 10},
    ], weight_decay=0.01)
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps))),
    )
    model.train()
    recent: list[float] = []
    started = time.monotonic()
    for step in range(steps):
        batch = collate(generator.sample(examples, batch_size), pad_id)
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        recent = (recent + [loss.item()])[-50:]
        if step % 100 == 0 or step == steps - 1:
            progress(f"step {step + 1}/{steps}  loss {sum(recent) / len(recent):.4f}  "
                     f"{time.monotonic() - started:.0f}s")
    model.eval()
    return sum(recent) / len(recent)


# The polish stage: the vision tower and projector alone (the language model as it is) go on learning on pictures
# laid out as drawing programs and test generators lay them out (`draw_picture`'s `placed`), at a thirtieth of
# the training rate. Upright squares centred at 1/4..3/4 of a square picture were called circles (their edges on the
# patch grid). Measured beside the build before it in benchmarks/RESULTS.md. Tried and not kept: polishing the
# whole model (loglik on options written "a circle" fell 100% -> 83-92% before normalising), the vision tower at
# 3x this rate (held-out captions 999 -> 994 of 1,000), and a whole build with such pictures from the start (6
# points of loglik and 18 of generate lost on unseen wordings).
POLISH = {"steps": 300, "examples": 3000, "lr": 1e-4, "placed": 1 / 3}


def build_base(output: Path, steps: int = 2200, examples: int = 16000, seed: int = 0, vision_steps: int = 2000,
               polish_steps: int = POLISH["steps"], polish_examples: int = POLISH["examples"],
               progress: Progress = print) -> Path:
    """Train the demo base model and save it (weights, processor, generation config) to `output`."""
    import torch

    torch.manual_seed(seed)
    processor = build_processor()
    model = build_model(processor, seed)
    progress(f"demo model: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters; "
             f"drawing {examples} training pictures")
    data = make_examples(processor, examples, seed)
    pretrain_vision(model, data, vision_steps, seed, progress)
    train(model, data, processor.tokenizer.pad_token_id, steps, 32, 3e-3, seed, progress)
    progress(f"polish: {polish_examples} pictures laid out as drawing programs lay them out")
    torch.manual_seed(seed + 1)
    polish = make_examples(processor, polish_examples, seed + 1, placed=POLISH["placed"])
    seeing = [*model.model.vision_tower.parameters(), *model.model.multi_modal_projector.parameters()]
    train(model, polish, processor.tokenizer.pad_token_id, polish_steps, 32, POLISH["lr"], seed + 1, progress,
          parameters=seeing)
    save_atomically(output, lambda tmp: (model.save_pretrained(tmp), processor.save_pretrained(tmp),
                                         (tmp / RECIPE_FILE).write_text(json.dumps(DEMO_RECIPE, indent=2) + "\n")))
    return output


def save_atomically(output: Path, write: Callable[[Path], object]) -> None:
    """Write a folder next to `output`, then swap it into place, so no half-written folder remains."""
    from ..files import staged_folder

    with staged_folder(Path(output), replace=True) as staging:
        write(staging)


def build_demo(settings, steps: int | None = None, output: str | None = None, progress: Progress = print) -> Path:
    """`python launch.py build-demo`: train the demo model into models/vlmchat-demo and check it."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from ..models.resolve import demo_model_path
    from .heldout import heldout_pictures

    started = time.monotonic()
    target = Path(output) if output else demo_model_path(settings)
    if output and (target.is_file() or target.is_dir() and any(target.iterdir())
                   and not (target / "config.json").is_file()):
        from ..errors import InputError

        raise InputError(f"{target} holds other files, and build-demo replaces the folder it writes as a whole: "
                         "give a new or empty folder (or a model folder to rebuild) with --output.")
    # --steps N is a shorter build throughout: the vision tower's pretraining too (it ran its 2,000 steps)
    shorter = {"steps": steps, "vision_steps": min(2000, steps), "polish_steps": min(POLISH["steps"], steps)}
    build_base(target, **(shorter if steps else {}), progress=progress)
    model = AutoModelForImageTextToText.from_pretrained(target)
    processor = AutoProcessor.from_pretrained(target)
    accuracy = caption_accuracy(model, processor, heldout_pictures(200))
    progress(f"demo model written to {target} in {time.monotonic() - started:.0f}s; "
             f"held-out caption accuracy {accuracy:.1%} (200 pictures)")
    if output is None:  # the shipped adapter goes with the shipped model only
        from .spanish import ADAPTER_NAME, build_spanish_adapter

        build_spanish_adapter(target, settings.paths.resolve("adapters") / ADAPTER_NAME, progress=progress)
        progress(f"build-demo done in {time.monotonic() - started:.0f}s")
    return target
