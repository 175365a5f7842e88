"""What a fine-tune step keeps for the backward pass: logits over the whole sample vs from the answer on.

Run: .venv/bin/python benchmarks/realsize/answer_logits.py [--model qwen2-vl-2b] [--tokens 543] [--answer 40]

The model from outputs/realsize/NAME (build.py) in float32 with LoRA as a fine-tune puts it, a sample of N tokens
whose last A are the answer (labels -100 before), one forward pass each way, side by side: the model's own loss
(`model(..., labels=...)`, logits at every position) and the trainer's `finetune.collate.batch_loss` (logits from
the first answer token on). It prints the bytes of the tensors autograd saves for the backward pass (unique
storages, counted with `torch.autograd.graph.saved_tensors_hooks`: exact, where the CPU's peak RSS moves by up to
30% between runs of the same step) and the two losses, which must be equal.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT))


def saved_bytes(loss_of) -> tuple[float, int]:
    """(loss, bytes of the unique storages autograd saved while computing it)."""
    import torch

    storages: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = loss_of()
    return float(loss), sum(storages.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="qwen2-vl-2b")
    parser.add_argument("--tokens", type=int, default=543)
    parser.add_argument("--answer", type=int, default=40)
    args = parser.parse_args()
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    from vlmchat.finetune.collate import IGNORE, batch_loss
    from vlmchat.finetune.model import _checkpoint, target_regex

    folder = ROOT / "outputs" / "realsize" / args.model
    if not (folder / "config.json").is_file():
        raise SystemExit(f"{folder} is missing: run benchmarks/realsize/build.py {args.model} first")
    model = AutoModelForImageTextToText.from_pretrained(folder, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=target_regex(model)))
    _checkpoint(model.get_base_model())
    model.train()
    ids = torch.randint(10, 1000, (1, args.tokens), generator=torch.Generator().manual_seed(0))
    labels = ids.clone()
    labels[:, :-args.answer] = IGNORE
    batch = {"input_ids": ids, "labels": labels}
    whole_loss, whole = saved_bytes(lambda: model(**batch).loss)
    answer_loss, answer = saved_bytes(lambda: batch_loss(model, batch))
    vocabulary = model.get_output_embeddings().out_features
    print(f"| model | tokens | answer | checkpointing | saved for backward: logits everywhere | from the answer on "
          f"| saved | loss, loss |\n|---|---:|---:|---|---:|---:|---:|---|\n"
          f"| {args.model} (vocabulary {vocabulary:,}) | {args.tokens} | {args.answer} | on | {whole / 2**30:.2f} GiB "
          f"| {answer / 2**30:.2f} GiB | {(whole - answer) / 2**30:.2f} GiB | {whole_loss:.5f}, {answer_loss:.5f} |")


if __name__ == "__main__":
    main()
