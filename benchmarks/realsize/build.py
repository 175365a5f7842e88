"""Real-size model folders without a hub: published configs, random weights, an offline tokenizer.

Writes what `snapshot_download` would leave for SmolVLM-256M/500M-Instruct or Qwen2-VL-2B-Instruct:
the published config.json, generation_config.json, preprocessor/processor config and chat template
(benchmarks/realsize/configs/<name>/, sources in SOURCES.md), random weights as safetensors in the
published dtype, and a tokenizer of the real vocabulary size with the special tokens at their
published ids. `launch.py --model FOLDER`, `launch.py plan --model FOLDER` and a fine-tune load it
like a downloaded model. `--shrink` applies the folder's shrink.json (1 layer, width 64) for tests.

Run: .venv/bin/python benchmarks/realsize/build.py smolvlm-256m [--out outputs/realsize/smolvlm-256m] [--shrink]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
CONFIGS = HERE / "configs"
ROOT = HERE.parent.parent
MODELS = ("smolvlm-256m", "smolvlm-500m", "qwen2-vl-2b")  # what this CPU runs
GPU_MODELS = ("llama-3.2-11b-vision", "qwen2.5-vl-7b", "chameleon-7b")  # gpu_figures.py
COPIED = ("preprocessor_config.json", "processor_config.json", "chat_template.jinja")


def merged(base: dict, overrides: dict) -> dict:
    """`base` with `overrides` applied, nested dicts merged key by key."""
    out = dict(base)
    for key, value in overrides.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def model_config(name: str, shrink: bool = False) -> dict:
    """The published config.json of `name`, shrunk for tests when asked."""
    config = json.loads((CONFIGS / name / "config.json").read_text(encoding="utf-8"))
    if shrink:
        config = merged(config, json.loads((CONFIGS / name / "shrink.json").read_text(encoding="utf-8")))
    return config


def build_tokenizer(spec: dict):
    """A byte-level BPE tokenizer of `spec['vocab_size']` entries, special tokens at their published ids.

    Ordinary entries are the 256 byte symbols then placeholders (' tok<N>'); there are no merges, so text
    encodes one token per byte and every id the model may emit decodes to something readable.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    size, specials = int(spec["vocab_size"]), dict(spec["tokens"])
    vocab = {**specials, **image_codes(spec)}
    free = (index for index in range(size) if index not in vocab.values())
    for symbol in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[symbol] = next(free)
    vocab.update({f"\u0120tok{index}": index for index in free})
    bpe = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.add_special_tokens([AddedToken(token, special=True, normalized=False) for token in specials])
    roles = {key: spec.get(key) for key in ("bos_token", "eos_token", "pad_token", "unk_token", "sep_token")
             if spec.get(key)}
    return PreTrainedTokenizerFast(tokenizer_object=bpe, model_max_length=32768,
                                   extra_special_tokens=spec.get("extra_special_tokens", {}), **roles)


def image_codes(spec: dict) -> dict[str, int]:
    """Chameleon's VQ image tokens: code i is 'IMGIMG' + the digits of i spelled A-J + 'Z', at consecutive ids."""
    codes = spec.get("image_codes")
    if not codes:
        return {}
    spell = lambda i: "IMGIMG" + "".join(chr(ord("A") + int(d)) for d in str(i)) + "Z"  # noqa: E731
    return {spell(i): codes["first_id"] + i for i in range(codes["count"])}


def tokenizer_spec(name: str) -> dict:
    return json.loads((CONFIGS / name / "tokenizer_spec.json").read_text(encoding="utf-8"))


def write_processor(name: str, out: Path) -> None:
    """Tokenizer + the published processor files into `out`; fails here if AutoProcessor cannot load them."""
    from transformers import AutoProcessor

    build_tokenizer(tokenizer_spec(name)).save_pretrained(out)
    for file in COPIED:
        if (CONFIGS / name / file).is_file():
            shutil.copy2(CONFIGS / name / file, out / file)
    AutoProcessor.from_pretrained(out)


def write_model(name: str, out: Path, shrink: bool = False, seed: int = 0, device: str = "cpu") -> None:
    """Random weights for the (shrunk) published config, saved as safetensors in the published dtype.

    `device` "cuda" draws the weights on the GPU (a 7-11B model initialises there in seconds).
    """
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText

    config_dict = model_config(name, shrink)
    codes = tokenizer_spec(name).get("image_codes")
    if codes and codes.get("in_config"):  # Chameleon's config carries the whole vocabulary (token -> id)
        from transformers import AutoTokenizer

        config_dict[codes["in_config"]] = AutoTokenizer.from_pretrained(out).get_vocab()
    (out / "config.json").write_text(json.dumps(config_dict, indent=2), encoding="utf-8")
    config = AutoConfig.from_pretrained(out)
    torch.manual_seed(seed)
    dtype = getattr(torch, config_dict.get("torch_dtype", "float32"))
    with torch.device(device):
        model = AutoModelForImageTextToText.from_config(config, dtype=dtype)
    model.save_pretrained(out, max_shard_size="5GB")
    del model
    # the published files, as a download has them (save_pretrained rewrote both in its own format)
    (out / "config.json").write_text(json.dumps(config_dict, indent=2), encoding="utf-8")
    shutil.copy2(CONFIGS / name / "generation_config.json", out / "generation_config.json")


def build(name: str, out: Path, shrink: bool = False, seed: int = 0, device: str = "cpu") -> Path:
    """Write the model folder `out` for `name` (one of MODELS) and return it."""
    if name not in MODELS + GPU_MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS + GPU_MODELS)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_processor(name, out)
    write_model(name, out, shrink, seed, device)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=MODELS + GPU_MODELS)
    parser.add_argument("--out", type=Path, help="folder to write (default outputs/realsize/NAME, git-ignored)")
    parser.add_argument("--shrink", action="store_true", help="1 layer, width 64 (tests)")
    args = parser.parse_args(argv)
    out = build(args.name, args.out or ROOT / "outputs" / "realsize" / args.name, args.shrink)
    print(out)


if __name__ == "__main__":
    sys.exit(main())
