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

PROFILES: dict[str, FamilyProfile] = {
    "mllama": FamilyProfile(
        name="Llama 3.2 Vision", max_images=1, images_first=True,
        unquantized=("model.vision_model", "model.multi_modal_projector", "lm_head"),
        image_token="<|image|>",
        note="one image per conversation, placed before the text; no system message with an image",
    ),
    "qwen2_vl": FamilyProfile(name="Qwen2-VL", unquantized=("model.visual", "lm_head"), image_token="<|image_pad|>"),
    "qwen2_5_vl": FamilyProfile(name="Qwen2.5-VL", unquantized=("model.visual", "lm_head"), image_token="<|image_pad|>"),
    "idefics3": FamilyProfile(
        name="SmolVLM / Idefics3", unquantized=("model.vision_model", "model.connector", "lm_head"),
        language_model=r"model\.text_model", image_token="<image>",
    ),
    "smolvlm": FamilyProfile(
        name="SmolVLM2", unquantized=("model.vision_model", "model.connector", "lm_head"),
        language_model=r"model\.text_model", image_token="<image>",
    ),
    "llava": FamilyProfile(name="LLaVA", unquantized=_LLAVA_LIKE, image_token="<image>"),
    "llava_next": FamilyProfile(
        name="LLaVA-NeXT", unquantized=_LLAVA_LIKE, image_token="<image>",
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
