"""Fine-tune throughput: dynamic padding + answer-only loss vs padding every sample to max_length=512.

Same data (demo conversations: picture + 1-3 questions, Spanish answers), same model (the shipped
demo model with the default LoRA: r=8, alpha=32, language model only), same batch size, in one
run. The two recipes alternate step by step so that load from other processes hits both alike.
The baseline is the common recipe: every sample padded to 512 tokens, loss on every non-pad token.

    .venv/bin/python benchmarks/finetune_padding.py [--steps 20] [--batch-size 8]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

MAX_LENGTH = 512


def _examples(processor, count: int, seed: int = 0) -> list[dict]:
    from vlmchat.demo import dialogue
    from vlmchat.demo.shapes import draw_picture
    from vlmchat.finetune.collate import encode_example

    rng = random.Random(seed)
    out = []
    for _ in range(count):
        picture = draw_picture(rng)
        out.append(encode_example(processor, [picture.image],
                                  dialogue.conversation(rng, picture.colour, picture.shape, "es")))
    return out


def _padded_to_512(batch: dict, pad_id: int) -> dict:
    """The common recipe: pad to max_length and learn every real token (prompt and image tokens too)."""
    from vlmchat.finetune.collate import pad_to_length

    batch = pad_to_length(batch, MAX_LENGTH, pad_id)
    labels = batch["input_ids"].clone()
    labels[batch["attention_mask"] == 0] = -100
    return {**batch, "labels": labels}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="measured optimizer steps per recipe")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: on a shared 2-core machine more threads mostly wait "
                             "for each other; the fine-tune job itself leaves one core to the UI the same way)")
    args = parser.parse_args()

    import torch
    from peft import get_peft_model
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from vlmchat.finetune.collate import collate
    from vlmchat.lora.runtime import default_lora_config

    torch.set_num_threads(args.threads)
    root = Path(__file__).resolve().parent.parent / "models" / "vlmchat-demo"
    processor = AutoProcessor.from_pretrained(root)
    torch.manual_seed(0)
    model = get_peft_model(AutoModelForImageTextToText.from_pretrained(root), default_lora_config())
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    pad = processor.tokenizer.pad_token_id
    data = _examples(processor, args.batch_size * 8)
    rng = random.Random(1)
    recipes = {"dynamic padding + answer-only loss": lambda b: b, "padded to 512, loss on all tokens":
               lambda b: _padded_to_512(b, pad)}
    seconds = {name: 0.0 for name in recipes}
    tokens = {name: 0 for name in recipes}
    model.train()
    for step in range(args.steps + 2):  # the first 2 rounds warm up and are not counted
        batch = collate(rng.sample(data, args.batch_size), pad)
        for name, make in recipes.items():
            inputs = make(batch)
            started = time.perf_counter()
            model(**inputs).loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if step >= 2:
                seconds[name] += time.perf_counter() - started
                tokens[name] += inputs["input_ids"].numel()
    rates = {name: args.steps * args.batch_size / seconds[name] for name in recipes}
    print(f"demo model + LoRA (r=8), batch {args.batch_size}, {args.steps} steps each, torch threads "
          f"{torch.get_num_threads()}")
    for name, rate in rates.items():
        print(f"  {name:36s} {rate:8.1f} samples/s   ({tokens[name] / args.steps / args.batch_size:.0f} tokens/sample)")
    dynamic, fixed = rates.values()
    print(f"speed-up: {dynamic / fixed:.1f}x (target >= 3x)")


if __name__ == "__main__":
    main()
