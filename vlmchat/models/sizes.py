"""A model's parameter counts for the quantization plan, without loading it.

From the catalog in settings.toml (works offline), from a local folder (config.json + the
safetensors headers: the first 8 bytes give the header length, the JSON header gives every
tensor's dtype and shape), or from the hub (huggingface_hub's get_safetensors_metadata, which
reads the same headers with HTTP range requests).
"""

from __future__ import annotations

import json
import math
import re
import struct
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Iterable

from ..errors import ModelLoadError
from ..settings import CatalogEntry, Settings
from .families import DEFAULT_UNQUANTIZED, PROJECTORS, VISION_TOWERS, unquantized_modules
from .resolve import ModelSource, catalog_entry, check_model_files, resolve_model

@dataclass(frozen=True)
class ModelSize:
    """Parameter counts (billions) of one model, split the way quantization treats them."""

    name: str
    language_b: float = field(metadata={"help": "Language model parameters, embeddings and lm_head included."})
    vision_b: float = field(metadata={"help": "Vision tower + projector: never quantized."})
    embeddings_b: float = field(
        default=0.0, metadata={"help": "Input embeddings + lm_head (part of language_b): bitsandbytes keeps them 16-bit."})
    kv_kib_per_token: float = field(default=0.0, metadata={"help": "KV cache per token in KiB at 16 bits; 0 = unknown."})
    file_gib: float = field(default=0.0, metadata={"help": "Bytes of the weight files in GiB; 0 = unknown."})
    source: str = field(default="", metadata={"help": "Where the figures come from (catalog, safetensors headers)."})
    text_shape: tuple = field(default=(), metadata={
        "help": "(layers, hidden, intermediate, vocabulary) of the language model from config.json; () = unknown."})

    def __post_init__(self) -> None:
        if self.language_b <= 0 or self.vision_b < 0 or not 0 <= self.embeddings_b <= self.language_b:
            raise ValueError(f"{self.name}: parameter counts must be positive and embeddings_b <= language_b.")

    @property
    def total_b(self) -> float:
        return self.language_b + self.vision_b


# Tensor (and module) names of the parts that are never quantized: vision towers, projectors, VQ image tokenizers.
VISION_PARTS = re.compile(r"(?:^|\.)(?:" + "|".join(VISION_TOWERS + PROJECTORS[:2] + ("vision_embed_tokens", "image_newline"))
                     + r")(?:\.|$)")
_EMBEDDINGS = re.compile(r"(?:^|\.)(?:embed_tokens|lm_head|wte|word_embeddings)(?:\.|$)")
_MAX_HEADER = 100 * 2**20


def size_from_catalog(entry: CatalogEntry) -> ModelSize:
    """The sizes written in the catalog."""
    return ModelSize(entry.id.split("/")[-1], entry.language_b, entry.vision_b, entry.embeddings_b,
                     entry.kv_kib_per_token, source="catalog in settings.toml")


def size_from_tensors(name: str, tensors: Iterable[tuple[str, list[int]]], config: dict | None,
                      source: str, file_gib: float = 0.0) -> ModelSize:
    """Sum tensor shapes (name, shape) into language / vision / embedding counts."""
    language = vision = embeddings = 0
    for tensor, shape in tensors:
        count = math.prod(shape) if shape else 1
        if VISION_PARTS.search(tensor):
            vision += count
        else:
            language += count
            if _EMBEDDINGS.search(tensor):
                embeddings += count
    if language == 0:
        raise ModelLoadError(f"{name}: found no language-model weights in its safetensors files.")
    return ModelSize(name, language / 1e9, vision / 1e9, embeddings / 1e9, kv_kib_per_token(config or {}),
                     source=source, file_gib=file_gib, text_shape=text_shape(config or {}))


def kv_kib_per_token(config: dict) -> float:
    """KV cache per token in KiB at 16 bits, from a config.json dict (0 when it cannot tell)."""
    text = config.get("text_config") or config
    try:
        layers = int(text["num_hidden_layers"])
        heads = int(text["num_attention_heads"])
        kv_heads = int(text.get("num_key_value_heads") or heads)
        head_dim = int(text.get("head_dim") or int(text["hidden_size"]) // heads)
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return 0.0
    return 2 * layers * kv_heads * head_dim * 2 / 1024


def text_shape(config: dict) -> tuple[int, ...]:
    """(layers, hidden, intermediate, vocabulary) of the language model from a config.json dict; () when it
    cannot tell."""
    text = config.get("text_config") or config
    try:
        return tuple(int(text.get(key) or config[key])
                     for key in ("num_hidden_layers", "hidden_size", "intermediate_size", "vocab_size"))
    except (KeyError, TypeError, ValueError):
        return ()


def read_safetensors_header(path: Path) -> dict:
    """The JSON header of one .safetensors file (tensor name -> dtype, shape, offsets)."""
    with open(path, "rb") as handle:
        raw = handle.read(8)
        if len(raw) != 8:
            raise ModelLoadError(f"{path} is not a safetensors file (too short).")
        (length,) = struct.unpack("<Q", raw)
        if length > _MAX_HEADER:
            raise ModelLoadError(f"{path} has an implausible safetensors header ({length} bytes).")
        try:
            return json.loads(handle.read(length))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ModelLoadError(f"{path} has a corrupt safetensors header; download it again.") from None


def size_from_folder(folder: Path, name: str | None = None) -> ModelSize:
    """Sizes of a model saved with save_pretrained (config.json + *.safetensors)."""
    folder = Path(folder)
    from .resolve import read_config

    config = read_config(folder) if (folder / "config.json").exists() else {}
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        pickled = sorted(p.name for p in folder.glob("*.bin")) + sorted(p.name for p in folder.glob("*.pt*"))
        raise ModelLoadError(f"{folder} has no .safetensors weight files" + (
            f" (only {', '.join(pickled[:3])}: vlmchat never loads pickled weights; convert them with "
            "save_pretrained(..., safe_serialization=True))" if pickled else
            "; copy the model's *.safetensors files into it (or download it again)") + ".")
    tensors = []
    for file in files:
        for tensor, info in read_safetensors_header(file).items():
            if tensor != "__metadata__":
                tensors.append((tensor, info.get("shape", [])))
    return size_from_tensors(name or folder.name, tensors, config, source="safetensors headers",
                             file_gib=sum(file.stat().st_size for file in files) / 2**30)


def size_from_hub(repo_id: str, revision: str | None = None, token: str | None = None) -> ModelSize:
    """Sizes of a hub model from its safetensors headers and config.json, read over HTTP.

    The headers read are those of the weight files a download fetches, and the bytes they hold (each tensor's
    dtype times its shape) are the files' size, so the plan sees float32 files as float32 before the download,
    as it does in a local folder and as Load does. The repo is looked up first, so a misspelt, private or gated
    repo gets the same message as in the Files pane.
    """
    from concurrent.futures import ThreadPoolExecutor

    from huggingface_hub import HfApi

    from ..hub import DownloadError, OfflineError, friendly_hub_error, hub_endpoint, is_offline, offline_message, \
        select_files

    if is_offline():  # only a model that is not cached is sized from the hub
        raise OfflineError(offline_message(repo_id))
    api = HfApi(endpoint=hub_endpoint())
    try:
        info = api.model_info(repo_id, revision=revision, token=token)
        names = [sibling.rfilename for sibling in info.siblings or []]
        weights = [path for path, _ in select_files([(name, 0) for name in names])[0] if path.endswith(".safetensors")]
        if not weights or "config.json" not in names:
            raise DownloadError(_not_sizable(repo_id, names, hub_endpoint()))
        with ThreadPoolExecutor(max_workers=min(8, len(weights))) as pool:  # big models have dozens of shards
            headers = list(pool.map(lambda name: api.parse_safetensors_file_metadata(
                repo_id, name, revision=info.sha, token=token), weights))
        config_path = api.hf_hub_download(repo_id, "config.json", revision=info.sha, token=token)
        config = json.loads(Path(config_path).read_text(encoding="utf-8"))
    except DownloadError:
        raise
    except Exception as exc:  # every hub failure becomes one user-facing message
        raise friendly_hub_error(exc, repo_id, token, revision) from None
    check_model_files(repo_id, config, names)
    tensors = [(tensor, item.shape) for header in headers for tensor, item in header.tensors.items()]
    data_bytes = sum(item.data_offsets[1] - item.data_offsets[0] for header in headers for item in header.tensors.values())
    return size_from_tensors(repo_id.split("/")[-1], tensors, config, source="safetensors headers on the hub",
                             file_gib=data_bytes / 2**30)


def _not_sizable(repo_id: str, names: list[str], endpoint: str) -> str:
    """Why a hub repo's size cannot be read: no config.json, only PyTorch .bin weights, or no weights at all."""
    top = [name for name in names if "/" not in name]
    files = f"(see the files at {endpoint}/{repo_id}/tree/main)"
    if "config.json" not in top:
        return f"{repo_id} has no config.json at its top level, so it is not a model saved by transformers {files}."
    if any(name.endswith(".bin") for name in top):
        return (f"{repo_id} has only PyTorch .bin weights at its top level, no safetensors; vlmchat reads a model's "
                f"size from its safetensors files, so look for a safetensors copy of this model {files}.")
    return (f"{repo_id} has no safetensors or PyTorch weights at its top level; vlmchat loads models saved by "
            f"transformers {files}.")


def size_for_source(source: ModelSource, settings: Settings, token: str | None = None) -> ModelSize:
    """Sizes of a resolved model: its safetensors headers when local, else the catalog, else the hub's headers.

    Local files come first because Load reads them, so the plan shown before Load is the one Load uses.
    """
    if source.path is not None:
        return size_from_folder(source.path, source.name)
    if source.catalog is not None:
        return size_from_catalog(source.catalog)
    return size_from_hub(source.model_id, token=token)


def model_size_for(model: str, settings: Settings, token: str | None = None) -> ModelSize:
    """Sizes of `model` ('demo', catalog key, hub id or folder)."""
    return size_for_source(resolve_model(model, settings), settings, token)


def unquantized_for_family(family: str) -> tuple[str, ...]:
    """Module-name patterns left unquantized for a model_type: its profile, else the generic list."""
    return tuple(unquantized_modules(family)) if family else DEFAULT_UNQUANTIZED


def vision_positions_per_token(config: dict) -> int:
    """Vision-tower positions behind one image token of the language model: SmolVLM / Idefics3's pixel shuffle
    (`scale_factor` squared), Qwen2-VL's patch merging (`spatial_merge_size` squared), else 1 (LLaVA)."""
    if config.get("scale_factor"):
        return int(config["scale_factor"]) ** 2
    merge = (config.get("vision_config") or {}).get("spatial_merge_size")
    return int(merge) ** 2 if merge else 1


REFERENCE_PICTURE = (512, 512)  # the picture the plan budgets for: what a phone photo becomes after a chat upload


def picture_tokens(folder: Path, detail: str = "high", picture: tuple[int, int] = REFERENCE_PICTURE) -> int | None:
    """Image tokens one `picture`-sized image becomes at `detail` (low/high) through the folder's own processor.

    None when the folder has no processor (a catalog or hub model not downloaded yet). Counted by running the
    processor itself, so every family's tiling and pixel budget is exactly the library's (once per folder).
    """
    counted = _one_picture_question(folder, detail, picture)
    return None if counted is None else counted[0]


def conversation_tokens(folder: Path, detail: str, conversations: Iterable,
                        picture: tuple[int, int] = REFERENCE_PICTURE) -> list[int] | None:
    """Tokens each processor-format conversation (a list of messages) becomes at `detail`, every picture in it
    counted as one `picture`-sized image: the conversation's chat-template text, tokenized, plus what the processor
    makes of each picture's placeholder (image tokens and tile markers: the one-picture question counted whole
    minus the same question's text). None when the folder has no processor."""
    from ..finetune.collate import pictures_in

    counted = _one_picture_question(folder, detail, picture)
    if counted is None:
        return None
    growth = counted[1] - counted[2]
    return [_text_tokens(folder, json.dumps(list(messages), sort_keys=True)) + growth * pictures_in(messages)
            for messages in conversations]


@lru_cache(maxsize=65536)
def _text_tokens(folder: Path, conversation: str) -> int:
    """Tokens of a conversation's (JSON) chat-template text, each picture still its placeholder; once per
    conversation and model, since the plan is remade whenever a control of the tab changes."""
    from ..finetune.collate import render_text

    processor = _processor(folder)[0]
    return len(processor.tokenizer(render_text(processor, json.loads(conversation), False))["input_ids"])


@lru_cache(maxsize=8)
def _processor(folder: Path) -> tuple | None:
    """(processor, family profile) of a model folder, the profile's chat template set where the processor has
    none (as fine-tuning sets it); None without a processor."""
    from transformers import AutoProcessor

    from .families import profile_for

    from .resolve import read_config

    try:
        processor = AutoProcessor.from_pretrained(folder)
        config = read_config(Path(folder))
    except (OSError, ValueError, ModelLoadError):
        return None
    profile = profile_for(config)
    if profile.needs_template(processor):
        processor.chat_template = profile.chat_template
    return processor, profile


@lru_cache(maxsize=32)
def _one_picture_question(folder: Path, detail: str, picture: tuple[int, int]) -> tuple[int, int, int] | None:
    """(image tokens, all tokens, text tokens with the picture still its placeholder) of a one-word question about
    one `picture`-sized image; None without a processor."""
    from PIL import Image

    from ..finetune.collate import render_text
    from .families import detail_kwargs, enough_short_side, shrink_pictures

    loaded = _processor(folder)
    if loaded is None:
        return None
    processor, profile = loaded
    image_token = getattr(processor, "image_token", None) or profile.image_token
    if getattr(processor, "image_processor", None) is None or image_token is None:
        return None
    kwargs, max_edge = detail_kwargs(profile, processor, detail)
    ask = [{"role": "user", "content": [{"type": "image", "image": Image.new("RGB", picture, "white")},
                                        {"type": "text", "text": "?"}]}]
    inputs = processor.apply_chat_template(shrink_pictures([ask], max_edge, enough_short_side(processor, profile)), add_generation_prompt=True, tokenize=True,
                                           return_dict=True, return_tensors="pt", processor_kwargs=kwargs)
    image_id = processor.tokenizer.convert_tokens_to_ids(str(image_token))
    text = processor.tokenizer(render_text(processor, ask, True))["input_ids"]
    return int((inputs["input_ids"] == image_id).sum()), int(inputs["input_ids"].shape[-1]), len(text)
