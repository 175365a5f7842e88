"""How well the demo model (or a demo adapter) answers: batched greedy answers and caption accuracy."""

from __future__ import annotations

from typing import Callable

from . import dialogue

Progress = Callable[[str], None]


def answer_batch(model, processor, images, question: str, max_new_tokens: int = 8) -> list[str]:
    """Greedy answers of the model to one question about each image, batched."""
    import torch

    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    batch = processor(images=list(images), text=[text] * len(images), return_tensors="pt", padding=True)
    with torch.inference_mode():
        out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False)
    return processor.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)


def caption_accuracy(model, processor, pictures, language: str = "en", batch_size: int = 50) -> float:
    """Share of pictures whose caption names both the right colour and the right shape."""
    right = 0
    for start in range(0, len(pictures), batch_size):
        chunk = pictures[start:start + batch_size]
        captions = answer_batch(model, processor, [p[0] for p in chunk], "Describe the image.")
        right += sum(c.strip() == dialogue.answer("caption", col, shp, language)
                     for c, (_, col, shp) in zip(captions, chunk))
    return right / len(pictures)
