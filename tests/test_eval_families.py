"""The shared-prefix loglik scorer on tiny random models of every supported family: exact, or refused with the way out."""

from __future__ import annotations

import pytest

COLOURS = ("red", "green", "blue", "yellow")


def _alone_with_cache_free_forward(model, processor, conversation, ids):
    """One option scored on the processor's prompt tokens + the option's tokens, one forward, no cache."""
    import torch

    from vlmchat.models.manager import ModelManager

    inputs = ModelManager._inputs(model, processor, [conversation])
    extra = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}
    for key in ("token_type_ids", "mm_token_type_ids"):  # per-token side inputs grow with the answer
        if key in extra:
            extra[key] = torch.cat([extra[key], torch.zeros(1, len(ids), dtype=extra[key].dtype)], dim=1)
    if "cross_attention_mask" in extra:  # Mllama: answer tokens see the image like the last prompt token
        mask = extra["cross_attention_mask"]
        extra["cross_attention_mask"] = torch.cat([mask, mask[:, -1:].repeat(1, len(ids), 1, 1)], dim=1)
    tokens = torch.cat([inputs["input_ids"], torch.tensor([ids])], dim=1)
    with torch.inference_mode():
        logits = model(input_ids=tokens, attention_mask=torch.ones_like(tokens), **extra).logits[0].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    start = tokens.shape[1] - len(ids)
    return sum(logprobs[start - 1 + k, ids[k]].item() for k in range(len(ids)))


@pytest.mark.parametrize("model_type", ["llava", "llava_next", "idefics3", "gemma3", "qwen2_vl", "qwen2_5_vl",
                                        "mllama", "chameleon", "paligemma"])
def test_shared_prefix_is_exact_on_every_family(tmp_path, model_type):
    import torch
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from families import save_family
    from vlmchat.errors import InputError
    from vlmchat.evaluate.score import choice_prompt, continuations, option_logprobs, user_turn
    from vlmchat.evaluate.sets import EvalItem

    family = save_family(model_type, tmp_path)
    if family.missing:
        pytest.skip(f"{model_type}'s processor needs {family.missing}")
    processor = AutoProcessor.from_pretrained(tmp_path)
    model = AutoModelForImageTextToText.from_pretrained(tmp_path).eval()
    items = [EvalItem("a", "What color is the shape?", (), COLOURS, 0),
             EvalItem("b", "Describe the image.", (), ("a red circle", "square", "a blue triangle"), 1)]
    pictures = [Image.new("RGB", (32, 32), (255, 0, 0)), Image.new("RGB", (40, 24), (0, 0, 255))]
    conversations = [user_turn([picture], choice_prompt(item)) for picture, item in zip(pictures, items)]
    if model_type == "paligemma":  # its template drops the answer turn: refused with the way out
        with pytest.raises(InputError, match="use --method generate"):
            continuations(model, processor, conversations[0], COLOURS)
        return
    conts = [continuations(model, processor, c, item.options) for c, item in zip(conversations, items)]
    with torch.inference_mode():
        shared = option_logprobs(model, processor, conversations, conts)
    for conversation, ids, scores in zip(conversations, conts, shared):
        alone = [_alone_with_cache_free_forward(model, processor, conversation, option) for option in ids]
        assert scores == pytest.approx(alone, abs=1e-4)
