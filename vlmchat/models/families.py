"""Model-family quirks as data: one profile per transformers `model_type`.

Everything that differs between the VLM families vlmchat supports (Llama 3.2 Vision, Qwen2-VL /
Qwen2.5-VL, SmolVLM / Idefics3, LLaVA / LLaVA-NeXT, PaliGemma, Gemma 3, Chameleon) lives in the
`PROFILES` table: how many images one prompt may carry, where images go in a message, which
modules stay unquantized, which linear layers LoRA targets, and the prompt format for processors
that ship without a chat template. Code asks `profile_for(config)` and never branches on a family.
Module names are those of the transformers v5 classes (`model.language_model`, `model.visual`, ...).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# The language model's attention and MLP projections, under one prefix. Mllama's cross-attention
# layers (`cross_attn`) belong to the language model too; vision towers use other names
# (`encoder.layers`, `blocks`, `vqmodel`), so a prefix on `.layers.N.` keeps them out.
_LM_LINEARS = r"\.layers\.\d+\.(?:self_attn|cross_attn|mlp)\.(?:q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"

# Images first, then the text of each message, one user/assistant turn after another: for
# processors without a chat template. `image_token` / `sep_token` come from the tokenizer's special tokens.
_PLAIN_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}"
    "{%- for part in message['content'] if part['type'] == 'image' -%}"
    "{{ image_token if image_token is defined else '<image>' }}{%- endfor -%}"
    "{%- for part in message['content'] if part['type'] == 'text' -%}{{ part['text'] }}{%- endfor -%}"
    "{%- endif -%}"
    "{%- if not loop.last -%}{{ sep_token if sep_token is defined else '\\n' }}{%- endif -%}"
    "{%- endfor -%}"
)

# PaliGemma is single-turn: "<image>...<image>" + the last user prompt; the processor adds <bos>
# after the images and the closing "\n" itself.
_PALIGEMMA_TEMPLATE = (
    "{%- set users = messages | selectattr('role', 'equalto', 'user') | list -%}"
    "{%- for message in messages if message['content'] is not string -%}"
    "{%- for part in message['content'] if part['type'] == 'image' -%}<image>{%- endfor -%}"
    "{%- endfor -%}"
    "{%- set last = users[-1]['content'] -%}"
    "{%- if last is string -%}{{ last }}{%- else -%}"
    "{%- for part in last if part['type'] == 'text' -%}{{ part['text'] }}{%- endfor -%}"
    "{%- endif -%}"
)


IMAGE_DETAILS = ("low", "auto", "high")  # as OpenAI's API names them


def check_image_detail(value: str) -> None:
    """InputError unless `value` is an image detail or "" (= the setting's default)."""
    if value not in ("", *IMAGE_DETAILS):
        from ..errors import InputError

        raise InputError(f"image detail must be low, auto or high (got {value!r}).")


@dataclass(frozen=True)
class DetailControl:
    """How a family's processor trades image tokens (time, memory) for detail; `high` is its published default."""

    kind: str = field(metadata={"help": "split: Idefics3 tiling on/off | pixels: Qwen2-VL pixel budget | "
                                        "tile: LLaVA-NeXT, the picture shrunk to one grid tile"})
    low_pixels: int = field(default=0, metadata={"help": "For 'pixels': the most pixels a picture keeps at low."})


@dataclass(frozen=True)
class FamilyProfile:
    """What vlmchat needs to know about one model family."""

    name: str = field(metadata={"help": "Human name shown to the user."})
    max_images: int | None = field(
        default=None, metadata={"help": "Most images one prompt (the whole conversation) may carry; None = no limit."})
    images_first: bool = field(
        default=False, metadata={"help": "Move a message's images before its text (the model was trained so)."})
    unquantized: tuple[str, ...] = field(
        default=("lm_head",),
        metadata={"help": "Module-name patterns bitsandbytes must leave alone (vision tower, projector, head)."})
    language_model: str = field(
        default=r"model\.language_model", metadata={"help": "Regex for the module path of the language model's decoder."})
    chat_template: str | None = field(
        default=None, metadata={"help": "Jinja template used when the processor ships none."})
    image_token: str | None = field(default=None, metadata={"help": "The placeholder the processor expands."})
    detail: DetailControl | None = field(
        default=None, metadata={"help": "How image detail is lowered; None: one size only, detail changes nothing."})
    note: str = ""

    @property
    def lora_targets(self) -> str:
        """PEFT `target_modules` regex: the language model's linear layers only."""
        return self.language_model + _LM_LINEARS

    def needs_template(self, processor) -> bool:
        """True when `processor` has no chat template of its own and this profile supplies one."""
        return not getattr(processor, "chat_template", None) and self.chat_template is not None


# The module names of vision towers and of projectors (image features -> language model) across the
# families; the plan keeps them unquantized, the size reader counts them as vision, fine-tuning targets them.
VISION_TOWERS = ("vision_tower", "vision_model", "visual", "vqmodel")
PROJECTORS = ("multi_modal_projector", "connector", "merger", "projector")

_LLAVA_LIKE = ("model.vision_tower", "model.multi_modal_projector", "lm_head")
# 256 merged tokens of 28x28 pixels: Qwen's own suggested lower bound for max_pixels (model card)
_QWEN_DETAIL = DetailControl("pixels", low_pixels=256 * 28 * 28)

PROFILES: dict[str, FamilyProfile] = {
    "mllama": FamilyProfile(
        name="Llama 3.2 Vision", max_images=1, images_first=True,
        unquantized=("model.vision_model", "model.multi_modal_projector", "lm_head"),
        image_token="<|image|>",
        note="one image per conversation, placed before the text; no system message with an image",
    ),
    "qwen2_vl": FamilyProfile(name="Qwen2-VL", unquantized=("model.visual", "lm_head"), image_token="<|image_pad|>",
                              detail=_QWEN_DETAIL),
    "qwen2_5_vl": FamilyProfile(name="Qwen2.5-VL", unquantized=("model.visual", "lm_head"), image_token="<|image_pad|>",
                                detail=_QWEN_DETAIL),
    "idefics3": FamilyProfile(
        name="SmolVLM / Idefics3", unquantized=("model.vision_model", "model.connector", "lm_head"),
        language_model=r"model\.text_model", image_token="<image>", detail=DetailControl("split"),
    ),
    "smolvlm": FamilyProfile(
        name="SmolVLM2", unquantized=("model.vision_model", "model.connector", "lm_head"),
        language_model=r"model\.text_model", image_token="<image>", detail=DetailControl("split"),
    ),
    "llava": FamilyProfile(name="LLaVA", unquantized=_LLAVA_LIKE, image_token="<image>"),
    "llava_next": FamilyProfile(
        name="LLaVA-NeXT", unquantized=_LLAVA_LIKE, image_token="<image>", detail=DetailControl("tile"),
        note="image tokens grow with the picture's resolution (any-res tiles)",
    ),
    "paligemma": FamilyProfile(
        name="PaliGemma", max_images=1, unquantized=_LLAVA_LIKE, chat_template=_PALIGEMMA_TEMPLATE,
        image_token="<image>",
        note="no chat template: single turn, images then a task prompt such as 'caption en'",
    ),
    "gemma3": FamilyProfile(name="Gemma 3", unquantized=_LLAVA_LIKE, image_token="<start_of_image>"),
    "chameleon": FamilyProfile(
        name="Chameleon", unquantized=("model.vqmodel", "lm_head"), language_model="model",
        chat_template=_PLAIN_TEMPLATE, image_token="<image>",
        note="images become VQ tokens inside the vocabulary; no chat template, turns split by sep token",
    ),
}

GENERIC = FamilyProfile(
    name="generic", unquantized=tuple(f".*{name}" for name in VISION_TOWERS + PROJECTORS[:2]) + ("lm_head",),
    language_model=r"(?:.*\.)?(?:language_model|text_model)", chat_template=_PLAIN_TEMPLATE,
)


DEFAULT_UNQUANTIZED = GENERIC.unquantized  # a family not in the table, or not known yet


def model_type_of(config_or_model_type: Any) -> str:
    """The transformers `model_type` of a config, a model, a config dict or a plain string."""
    if isinstance(config_or_model_type, str):
        return config_or_model_type
    if isinstance(config_or_model_type, dict):
        return str(config_or_model_type.get("model_type", ""))
    config = getattr(config_or_model_type, "config", config_or_model_type)
    return str(getattr(config, "model_type", ""))


def profile_for(config_or_model_type: Any) -> FamilyProfile:
    """The profile of a model family (config, model, config dict or model_type); GENERIC if unknown."""
    return PROFILES.get(model_type_of(config_or_model_type), GENERIC)


def unquantized_modules(model_type: Any) -> list[str]:
    """Module-name patterns to pass to bitsandbytes as `llm_int8_skip_modules`."""
    return list(profile_for(model_type).unquantized)


def lora_target_modules(model_type: Any) -> str:
    """The default PEFT `target_modules` (a regex over module names) for a family."""
    return profile_for(model_type).lora_targets



def fit_to_profile(messages: list[dict], profile: FamilyProfile) -> list[dict]:
    """`messages` arranged as the family expects (images first where it must); too many images is an error."""
    from ..errors import InputError

    images = sum(1 for m in messages if isinstance(m.get("content"), list)
                 for part in m["content"] if part.get("type") == "image")
    if profile.max_images is not None and images > profile.max_images:
        raise InputError(f"{profile.name} takes at most {profile.max_images} image(s) per conversation and this one "
                         f"has {images}; start a new chat to ask about another picture.")
    if not profile.images_first:
        return messages
    return [dict(m, content=sorted(m["content"], key=lambda part: part.get("type") != "image"))
            if isinstance(m.get("content"), list) else m for m in messages]


# --- image detail: low / auto / high -> the processor's tiling or pixel budget -----------------------

LOW_GPU_MEMORY_GIB = 2.0  # auto picks low on a GPU with less free than this after loading
_LOW_MEANS = {
    "split": "one tile per picture instead of up to 4x4 tiles plus the whole picture",
    "pixels": "at most {low_pixels:,} pixels per picture",
    "tile": "the picture shrunk to one grid tile",
}


@dataclass(frozen=True)
class DetailChoice:
    """The image detail a request runs at, what the processor is given for it, and why."""

    detail: str                   # "low" or "high"
    processor_kwargs: dict        # extra keyword arguments for the processor call
    max_edge: int | None = None   # pictures are first shrunk to at most this many pixels on their longest side
    reason: str = ""
    short_side: int | None = None  # ... and to at most this many on their short side (enough_short_side)


def choose_detail(setting: str, profile: FamilyProfile, device: str, free_gib: float | None = None) -> tuple[str, str]:
    """("low" | "high", reason) for the image_detail `setting` on `device` with `free_gib` left there."""
    if setting not in IMAGE_DETAILS:
        raise ValueError(f"image detail must be one of {', '.join(IMAGE_DETAILS)} (got {setting!r}).")
    if profile.detail is None:
        return "high", f"{profile.name} sees every picture at one size: image detail changes nothing"
    low = "low: " + _LOW_MEANS[profile.detail.kind].format(low_pixels=profile.detail.low_pixels)
    if setting != "auto":
        return setting, f"image detail {setting} (set)" + (f", {low.split(': ', 1)[1]}" if setting == "low" else "")
    if not str(device).startswith(("cuda", "mps")):
        return "low", f"auto on the CPU, where the vision tower is most of the wait at high detail -> {low}"
    if free_gib is not None and free_gib < LOW_GPU_MEMORY_GIB:
        return "low", f"auto with {free_gib:.1f} GiB free on {device} -> {low}"
    return "high", f"auto on {device} -> high: the processor's full tiling / pixel budget"


def detail_kwargs(profile: FamilyProfile, processor, detail: str) -> tuple[dict, int | None]:
    """(processor kwargs, longest picture edge or None) that make `processor` work at `detail`."""
    control = profile.detail
    if detail == "high" or control is None:
        return {}, None
    images = processor.image_processor
    if control.kind == "split":
        return {"do_image_splitting": False}, None
    if control.kind == "pixels":
        size = dict(images.size)  # Qwen2-VL's size is a pixel count: shortest_edge = min, longest_edge = max
        budget = min(control.low_pixels, size.get("longest_edge") or control.low_pixels)
        return {"size": {"shortest_edge": size.get("shortest_edge") or 56 * 56, "longest_edge": budget}}, None
    crop = dict(images.crop_size)
    return {}, int(crop.get("height") or crop.get("shortest_edge"))


def detail_for(setting: str, model, processor, free_gib: float | None = None) -> DetailChoice:
    """The DetailChoice for a loaded `model` and its `processor` (`free_gib`: memory left on its device)."""
    profile = profile_for(model)
    detail, reason = choose_detail(setting, profile, str(getattr(model, "device", "cpu")), free_gib)
    kwargs, max_edge = detail_kwargs(profile, processor, detail)
    return DetailChoice(detail, kwargs, max_edge, reason, enough_short_side(processor, profile))


def enough_short_side(processor, profile: FamilyProfile) -> int | None:
    """Pixels on a picture's short side past which `processor` sees nothing more: twice the largest edge its image
    processor resizes, crops, tiles or grids to. None where it reads a pixel budget (Qwen2-VL's max_pixels, which
    images.WORKING_PIXELS covers) or names no edge. A processor that pads a picture to a square of its long side
    (LLaVA's) holds that square whole: a 7999 x 400 picture cost the demo's 488 MB for a 64 x 64 input."""
    images = getattr(processor, "image_processor", None)
    if images is None or profile.detail is not None and profile.detail.kind == "pixels":
        return None
    edges = []
    for name in ("size", "crop_size", "max_image_size"):
        value = getattr(images, name, None)
        if hasattr(value, "__dataclass_fields__"):  # transformers' SizeDict
            value = {key: getattr(value, key) for key in value.__dataclass_fields__}
        if isinstance(value, dict) and (value.get("max_pixels") or value.get("min_pixels")):
            return None
        value = value if isinstance(value, dict) else {"edge": value}
        edges += [v for k, v in value.items() if isinstance(v, int) and k in ("edge", "shortest_edge", "longest_edge",
                                                                               "height", "width")]
    edges += [edge for point in getattr(images, "image_grid_pinpoints", None) or [] for edge in point]
    return 2 * max(edges) * max(1, int(getattr(images, "max_image_tiles", None) or 1)) if edges else None


def shrink_pictures(conversations: list[list[dict]], max_edge: int | None,
                    short_side: int | None = None) -> list[list[dict]]:
    """The conversations with every PIL picture larger than `max_edge` on a side, or with more than `short_side`
    on its short side, shrunk to fit (copies)."""
    if not max_edge and not short_side:
        return conversations

    from ..images import fit_picture

    def fit(part: dict) -> dict:
        image = part.get("image")
        if part.get("type") != "image" or not hasattr(image, "size"):
            return part
        return dict(part, image=fit_picture(image, max_edge, short_side))

    return [[dict(m, content=[fit(p) for p in m["content"]]) if isinstance(m.get("content"), list) else m
             for m in conversation] for conversation in conversations]
