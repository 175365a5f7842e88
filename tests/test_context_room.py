"""An answer stops where the model's context ends (its max_position_embeddings), whatever max new tokens says."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from vlmchat.models.manager import GenerationParams, context_tokens

RED_CIRCLE = Path(__file__).resolve().parent.parent / "examples" / "red-circle.png"


def test_an_answer_stops_at_the_end_of_the_context_with_finish_reason_length(manager):
    """A ~1,000-token question to the demo (1,024 positions) with max new tokens 300: found by a blind tester on
    /v1, the demo went on to position 1,300 (past the positions it was trained on: noise; a model with learned
    positions fails there). Now the answer has the 1,024 - prompt tokens left and says it was cut."""
    picture = Image.open(RED_CIRCLE).convert("RGB")
    question = "Describe the image. " * 185 + "Describe the image in a full sentence."
    conversation = [{"role": "user", "content": [{"type": "image", "image": picture},
                                                 {"type": "text", "text": question}]}]
    answer = manager.answer_batch([conversation], GenerationParams(max_new_tokens=300))[0]
    limit = context_tokens(manager.model)
    assert limit == 1024 and 900 < answer.prompt_tokens < limit
    assert answer.prompt_tokens + answer.completion_tokens <= limit
    # the demo does not end this one by itself (it went on for all 300 before): the context's end cut it
    assert answer.completion_tokens == limit - answer.prompt_tokens and answer.finish_reason == "length"
    # batched with a shorter question that has room for all 300: each keeps its own room (the batch's one cut,
    # from its longest prompt, gave the shorter question 24 tokens: reviewer)
    shorter = [{"role": "user", "content": [{"type": "image", "image": picture},
                                            {"type": "text", "text": "Describe the image. " * 120 + "Describe it."}]}]
    long_answer, shorter_answer = manager.answer_batch([conversation, shorter], GenerationParams(max_new_tokens=300))
    assert long_answer.completion_tokens == limit - long_answer.prompt_tokens and long_answer.finish_reason == "length"
    assert shorter_answer.prompt_tokens + 300 < limit
    assert shorter_answer.completion_tokens == 300 and shorter_answer.finish_reason == "length"
    short = manager.answer_batch([[{"role": "user", "content": [{"type": "image", "image": picture},
                                                                {"type": "text", "text": "Describe the image."}]}]],
                                 GenerationParams(max_new_tokens=300))[0]
    assert short.text == "a red circle" and short.finish_reason == "stop"  # room left: nothing changes
