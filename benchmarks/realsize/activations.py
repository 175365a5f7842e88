"""Training activations of one LoRA step by the language model's shape, measured beside the plan's estimate.

Run: .venv/bin/python benchmarks/realsize/activations.py [--model smolvlm-256m ...] [--tokens 143 1204]

Each row is one child process: the model from outputs/realsize/NAME (built by build.py) in float32, LoRA as a
fine-tune puts it (the family's targets, r 16, dropout 0.05), gradient checkpointing off or on, then one forward
and backward pass over N text tokens. It prints the peak RSS of that step over the loaded model (VmHWM, reset
after loading) beside `finetune.setup.activations_gib` for the same shape. The loss is the trainer's
(`finetune.collate.batch_loss`): every token labelled, or with `--answer N` the last N only, as a fine-tune labels
an answer (logits from its first token on). `--variant KEY=VALUE` changes the language model's config (random
weights), which is how the fit was checked on shapes no published model has.
The first model's intermediate x4 and hidden x2 variants were measured with
`--model smolvlm-256m --variant intermediate_size=6144` and `--variant hidden_size=1152`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT))


def changes(variant: list[str]) -> dict[str, int]:
    """--variant KEY=VALUE options as {KEY: VALUE}."""
    return {key: int(value) for key, value in (change.split("=") for change in variant)}


def child(folder: str, tokens: int, checkpointing: bool, variant: list[str], answer: int = 0) -> None:
    """One step in this process; prints {"peak_gib": ...}."""
    import psutil
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForImageTextToText

    from vlmchat.finetune.collate import IGNORE, batch_loss
    from vlmchat.finetune.model import _checkpoint, target_regex

    config = AutoConfig.from_pretrained(folder)
    for key, value in changes(variant).items():
        setattr(config.text_config, key, value)
    model = (AutoModelForImageTextToText.from_config(config, dtype=torch.float32) if variant else
             AutoModelForImageTextToText.from_pretrained(folder, dtype=torch.float32))
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05,
                                             target_modules=target_regex(model)))
    if checkpointing:
        _checkpoint(model.get_base_model())
    model.train()
    ids = torch.randint(10, 1000, (1, tokens), generator=torch.Generator().manual_seed(0))
    loaded = psutil.Process().memory_info().rss
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM from here on
    labels = ids.clone()
    if answer:  # a fine-tune's labels: the answer at the end, the prompt before it -100
        labels[:, :-answer] = IGNORE
    batch_loss(model, {"input_ids": ids, "labels": labels}).backward()
    peak = next(int(line.split()[1]) * 1024 for line in Path("/proc/self/status").read_text().splitlines()
                if line.startswith("VmHWM"))
    print(json.dumps({"peak_gib": (peak - loaded) / 2**30}))


def estimate(folder: Path, tokens: int, checkpointing: bool, variant: list[str]) -> float:
    from vlmchat.finetune.setup import activations_gib
    from vlmchat.models.sizes import ModelSize, text_shape

    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    if variant:
        config["text_config"].update(changes(variant))
    size = ModelSize(folder.name, language_b=1.0, vision_b=0.0, text_shape=text_shape(config))
    return activations_gib(size, tokens, 1, value_bytes=4, checkpointing=checkpointing)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", nargs="+", default=["smolvlm-256m", "smolvlm-500m", "qwen2-vl-2b"])
    parser.add_argument("--tokens", nargs="+", type=int, default=[143, 1204])
    parser.add_argument("--variant", action="append", default=[], help="KEY=VALUE of the language model's config")
    parser.add_argument("--answer", type=int, default=0,
                        help="label only the last N tokens, as a fine-tune labels an answer (default: every token)")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child[0], int(args.child[1]), args.child[2] == "on", args.variant, args.answer)
    print("| model | tokens | checkpointing | peak over the loaded model | plan's activations | plan / measured |")
    print("|---|---:|---|---:|---:|---:|")
    for name in args.model:
        folder = ROOT / "outputs" / "realsize" / name
        if not (folder / "config.json").is_file():
            raise SystemExit(f"{folder} is missing: run benchmarks/realsize/build.py {name} first")
        for tokens in args.tokens:
            for checkpointing in ("off", "on"):
                command = [sys.executable, __file__, "--child", str(folder), str(tokens), checkpointing]
                extra = [f"--variant={v}" for v in args.variant] + [f"--answer={args.answer}"]
                done = subprocess.run(command + extra, capture_output=True, text=True, cwd=ROOT)
                if done.returncode != 0:
                    raise SystemExit(done.stderr[-2000:])
                measured = json.loads(done.stdout.strip().splitlines()[-1])["peak_gib"]
                planned = estimate(folder, tokens, checkpointing == "on", args.variant)
                label = name + "".join(f" {v}" for v in args.variant) + (f" answer {args.answer}" if args.answer else "")
                print(f"| {label} | {tokens} | {checkpointing} | {measured:.2f} GiB | {planned:.2f} GiB | "
                      f"{planned / measured:.2f} |", flush=True)


if __name__ == "__main__":
    main()
