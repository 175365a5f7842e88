"""Tiny random instances of every supported VLM family, built offline from the real classes.

Each builder makes a small config from the family's real transformers config class (2 layers,
hidden size 64 so bitsandbytes' 64-wide blocks fit, a ~400-token vocabulary, 16-32 px pictures),
a byte-level BPE tokenizer trained on a few sentences with the family's special tokens, the family's real processor and Pil image
processor, and a chat template that behaves like the hub model's (same placeholders, same turn
markers; none where the hub model has none). `save_family` writes model + processor with
`save_pretrained`, so `AutoModelForImageTextToText` / `AutoProcessor` load the folder like a hub
model. `TinyFamily.image_tokens` is the number of placeholder tokens one 32x32 picture must
become, worked out from the config (not by asking the processor).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

CORPUS = [
    "Describe the image.", "What is in the picture?", "What color is the shape?", "What shape is this?",
    "a red circle on a white background", "a green square", "a blue triangle", "a yellow circle",
    "The picture shows one shape.", "caption en", "answer en what is this", "You are a helpful assistant.",
    "user assistant system model", "0123456789 ,.;:!?'-()",
]
SMALL = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2)


@dataclass(frozen=True)
class TinyFamily:
    """One built family: where it lives and what its processor must do with a 32x32 picture."""

    model_type: str
    path: Path
    image_token: str      # the token counted in input_ids
    image_tokens: int     # how many of them one 32x32 picture becomes
    missing: str | None = None  # a package this environment lacks for the family's processor


def make_tokenizer(specials: list[str], *, bos: str | None, eos: str, pad: str, late: list[str] = (),
                   **kwargs):
    """A byte-level BPE tokenizer trained on CORPUS; `specials` get the first ids, `late` the last."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(CORPUS * 4, trainer=trainer)
    if late:
        bpe.add_special_tokens(list(late))
    return PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token=bos, eos_token=eos, pad_token=pad,
                                   model_max_length=4096, **kwargs)


def _generation_defaults(model, tok) -> None:
    config = model.generation_config
    if not isinstance(config.eos_token_id, list):
        config.eos_token_id = tok.eos_token_id
    config.pad_token_id = tok.pad_token_id
    config.bos_token_id = tok.bos_token_id
    config.max_new_tokens, config.do_sample = 8, False


def _llama_text(tok, **extra):
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=len(tok), num_key_value_heads=2, max_position_embeddings=4096,
                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                       pad_token_id=tok.pad_token_id, **SMALL, **extra)


def _clip_vision(image_size: int = 32, patch_size: int = 8):
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(image_size=image_size, patch_size=patch_size, projection_dim=64, **SMALL)


def _siglip_vision(image_size: int = 32, patch_size: int = 8):
    from transformers import SiglipVisionConfig

    return SiglipVisionConfig(image_size=image_size, patch_size=patch_size, **SMALL)


# --- LLaVA 1.5 (llava-hf/llava-1.5-7b-hf template) -------------------------------------------------

LLAVA_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': '}}{% endif %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' '}}{% endfor %}"
    "{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)


def build_llava():
    from transformers import LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor
    from transformers.models.llava.image_processing_pil_llava import LlavaImageProcessorPil

    tok = make_tokenizer(["<unk>", "<s>", "</s>", "<pad>", "<image>"], bos="<s>", eos="</s>", pad="<pad>",
                         unk_token="<unk>", extra_special_tokens={"image_token": "<image>"})
    images = LlavaImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    processor = LlavaProcessor(image_processor=images, tokenizer=tok, patch_size=8, num_additional_image_tokens=1,
                               vision_feature_select_strategy="default", chat_template=LLAVA_TEMPLATE)
    config = LlavaConfig(vision_config=_clip_vision(), text_config=_llama_text(tok),
                         image_token_index=processor.image_token_id, image_seq_length=16,
                         vision_feature_layer=-1, vision_feature_select_strategy="default")
    model = LlavaForConditionalGeneration(config)
    return model, processor, "<image>", (32 // 8) ** 2


# --- LLaVA-NeXT (llava-hf/llava-v1.6-mistral-7b-hf template) ---------------------------------------

LLAVA_NEXT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'system' %}"
    "{{ '<<SYS>>\n' + message['content'][0]['text'] + '\n<</SYS>>\n\n' }}"
    "{% elif message['role'] == 'user' %}{{ '[INST] ' }}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] }}{% endfor %}"
    "{{' [/INST]' }}{% elif message['role'] == 'assistant' %}"
    "{{ ' ' + message['content'][0]['text'] + '</s> '}}{% endif %}{% endfor %}"
)


def build_llava_next():
    from transformers import LlavaNextConfig, LlavaNextForConditionalGeneration, LlavaNextProcessor
    from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

    pinpoints = [[32, 32], [32, 64], [64, 32], [64, 64]]
    tok = make_tokenizer(["<unk>", "<s>", "</s>", "<pad>", "<image>"], bos="<s>", eos="</s>", pad="<pad>",
                         unk_token="<unk>", extra_special_tokens={"image_token": "<image>"})
    images = LlavaNextImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
                                        image_grid_pinpoints=pinpoints)
    processor = LlavaNextProcessor(image_processor=images, tokenizer=tok, patch_size=8, num_additional_image_tokens=1,
                                   vision_feature_select_strategy="default", chat_template=LLAVA_NEXT_TEMPLATE)
    config = LlavaNextConfig(vision_config=_clip_vision(), text_config=_llama_text(tok),
                             image_token_index=processor.image_token_id, image_grid_pinpoints=pinpoints,
                             vision_feature_layer=-1, vision_feature_select_strategy="default", image_seq_length=16)
    model = LlavaNextForConditionalGeneration(config)
    # a 32x32 picture is one 32x32 tile: 4x4 base features + 4x4 tile features + one newline per row
    return model, processor, "<image>", 16 + 16 + 4


# --- PaliGemma (no chat template on the hub: vlmchat's profile supplies the prompt format) --------

def build_paligemma():
    from transformers import GemmaConfig, PaliGemmaConfig, PaliGemmaForConditionalGeneration, PaliGemmaProcessor
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    tok = make_tokenizer(["<pad>", "<eos>", "<bos>", "<unk>", "<image>"], bos="<bos>", eos="<eos>", pad="<pad>",
                         unk_token="<unk>", extra_special_tokens={"image_token": "<image>"})
    images = SiglipImageProcessorPil(size={"height": 32, "width": 32}, image_seq_length=16,
                                     image_mean=[0.5] * 3, image_std=[0.5] * 3)
    processor = PaliGemmaProcessor(image_processor=images, tokenizer=tok)  # adds <loc>/<seg> tokens
    text = GemmaConfig(vocab_size=len(tok), num_key_value_heads=1, head_dim=32, max_position_embeddings=4096,
                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                       **SMALL)
    config = PaliGemmaConfig(vision_config=_siglip_vision(), text_config=text, projection_dim=64, hidden_size=64,
                             image_token_index=processor.image_token_id, vocab_size=len(tok))
    model = PaliGemmaForConditionalGeneration(config)
    return model, processor, "<image>", (32 // 8) ** 2


# --- Gemma 3 (google/gemma-3-4b-it template, simplified) -------------------------------------------

GEMMA3_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}{%- set first_user_prefix = '' -%}{%- set loop_messages = messages -%}{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}"
    "{%- if message['content'] is string -%}{{ message['content'] | trim }}{%- else -%}"
    "{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' -%}{{ '<start_of_image>' }}"
    "{%- elif item['type'] == 'text' -%}{{ item['text'] | trim }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{ '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)


def build_gemma3():
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3Processor, Gemma3TextConfig
    from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil

    tok = make_tokenizer(["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>",
                          "<start_of_image>", "<end_of_image>", "<image_soft_token>"],
                         bos="<bos>", eos="<eos>", pad="<pad>", unk_token="<unk>",
                         extra_special_tokens={"image_token": "<image_soft_token>", "boi_token": "<start_of_image>",
                                               "eoi_token": "<end_of_image>"})
    images = Gemma3ImageProcessorPil(size={"height": 32, "width": 32}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    processor = Gemma3Processor(image_processor=images, tokenizer=tok, image_seq_length=4,
                                chat_template=GEMMA3_TEMPLATE)
    text = Gemma3TextConfig(vocab_size=len(tok), num_key_value_heads=1, head_dim=32, query_pre_attn_scalar=32,
                            sliding_window=64, max_position_embeddings=4096, pad_token_id=tok.pad_token_id,
                            bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, **SMALL)
    config = Gemma3Config(text_config=text, vision_config=_siglip_vision(), mm_tokens_per_image=4,
                          boi_token_index=tok.convert_tokens_to_ids("<start_of_image>"),
                          eoi_token_index=tok.convert_tokens_to_ids("<end_of_image>"),
                          image_token_index=tok.convert_tokens_to_ids("<image_soft_token>"))
    model = Gemma3ForConditionalGeneration(config)
    model.generation_config.eos_token_id = [tok.eos_token_id, tok.convert_tokens_to_ids("<end_of_turn>")]
    return model, processor, "<image_soft_token>", 4


# --- SmolVLM / Idefics3 (HuggingFaceTB/SmolVLM-256M-Instruct template) -----------------------------

SMOLVLM_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)


def build_idefics3():
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3Processor, Idefics3VisionConfig
    from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

    grid = [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)]
    tok = make_tokenizer(["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<fake_token_around_image>", "<image>",
                          "<end_of_utterance>", "<global-img>", *grid],
                         bos="<|im_start|>", eos="<end_of_utterance>", pad="<|im_end|>", unk_token="<|endoftext|>",
                         extra_special_tokens={"image_token": "<image>"})
    images = Idefics3ImageProcessorPil(size={"longest_edge": 64}, max_image_size={"longest_edge": 32},
                                       image_mean=[0.5] * 3, image_std=[0.5] * 3)
    # (32 / 8)^2 patches, pixel-shuffled by scale_factor 2 -> 4 tokens per tile
    processor = Idefics3Processor(image_processor=images, tokenizer=tok, image_seq_len=4,
                                  chat_template=SMOLVLM_TEMPLATE)
    vision = Idefics3VisionConfig(image_size=32, patch_size=8, **SMALL)
    config = Idefics3Config(vision_config=vision, text_config=_llama_text(tok), scale_factor=2,
                            image_token_id=processor.image_token_id)
    model = Idefics3ForConditionalGeneration(config)
    # a 32x32 picture is upscaled to 64x64: 2x2 tiles of 32 + the global image, 4 tokens each
    return model, processor, "<image>", 5 * 4


# --- Qwen2-VL / Qwen2.5-VL (chatml, default system prompt) ----------------------------------------

QWEN_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _qwen_parts():
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    tok = make_tokenizer(["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                          "<|image_pad|>", "<|video_pad|>"],
                         bos=None, eos="<|im_end|>", pad="<|endoftext|>",
                         extra_special_tokens={"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"})
    # patch 4, merge 2: pictures are resized to multiples of 8 px, between 16x16 and 64x64 pixels worth
    images = Qwen2VLImageProcessorPil(patch_size=4, merge_size=2, temporal_patch_size=2,
                                      size={"shortest_edge": 16 * 16, "longest_edge": 64 * 64})
    ids = {name: tok.convert_tokens_to_ids(token) for name, token in [
        ("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
        ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>")]}
    text = dict(vocab_size=len(tok), num_key_value_heads=2, max_position_embeddings=4096,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 6, 6]},
                bos_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, **SMALL)
    return tok, images, ids, text


class ProcessorParts:
    """The processor files of a checkpoint whose processor class cannot be built in this environment."""

    def __init__(self, tokenizer, image_processor, chat_template: str, missing: str):
        self.tokenizer, self.image_processor, self.chat_template = tokenizer, image_processor, chat_template
        self.missing = missing

    def save_pretrained(self, folder) -> None:
        self.tokenizer.save_pretrained(folder)
        self.image_processor.save_pretrained(folder)
        (Path(folder) / "chat_template.jinja").write_text(self.chat_template, encoding="utf-8")


def _qwen_processor(processor_class, tok, images):
    from transformers.utils import is_torchvision_available

    if not is_torchvision_available():
        # transformers 5.x builds a Qwen2-VL processor only together with its video processor, which needs torchvision
        return ProcessorParts(tok, images, QWEN_TEMPLATE, "torchvision (the Qwen2-VL processor's video part needs it)")
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    video = Qwen2VLVideoProcessor(patch_size=4, merge_size=2, temporal_patch_size=2,
                                  size={"shortest_edge": 16 * 16, "longest_edge": 64 * 64})
    return processor_class(image_processor=images, tokenizer=tok, video_processor=video, chat_template=QWEN_TEMPLATE)


def build_qwen2_vl():
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor

    tok, images, ids, text = _qwen_parts()
    processor = _qwen_processor(Qwen2VLProcessor, tok, images)
    vision = dict(depth=2, embed_dim=64, hidden_size=64, num_heads=2, mlp_ratio=2, patch_size=4,
                  spatial_merge_size=2, temporal_patch_size=2)
    config = Qwen2VLConfig(text_config=text, vision_config=vision, **ids)
    model = Qwen2VLForConditionalGeneration(config)
    # 32x32 -> 8x8 patches of 4 px, merged 2x2 -> 16 tokens
    return model, processor, "<|image_pad|>", 16


def build_qwen2_5_vl():
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor

    tok, images, ids, text = _qwen_parts()
    processor = _qwen_processor(Qwen2_5_VLProcessor, tok, images)
    vision = dict(depth=2, hidden_size=64, intermediate_size=128, num_heads=2, out_hidden_size=64, patch_size=4,
                  spatial_merge_size=2, temporal_patch_size=2, window_size=16, fullatt_block_indexes=[1])
    config = Qwen2_5_VLConfig(text_config=text, vision_config=vision, **ids)
    model = Qwen2_5_VLForConditionalGeneration(config)
    return model, processor, "<|image_pad|>", 16


# --- Llama 3.2 Vision / Mllama (meta-llama/Llama-3.2-11B-Vision-Instruct template, simplified) ----

MLLAMA_TEMPLATE = (
    "{{- bos_token }}"
    "{%- set ns = namespace(images=false) -%}"
    "{%- for message in messages -%}{%- if message['content'] is not string -%}"
    "{%- for part in message['content'] if part['type'] == 'image' -%}{%- set ns.images = true -%}{%- endfor -%}"
    "{%- endif -%}{%- endfor -%}"
    "{%- if ns.images and messages[0]['role'] == 'system' -%}"
    "{{- raise_exception('Prompting with images is incompatible with system messages.') }}{%- endif -%}"
    "{%- for message in messages -%}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' }}"
    "{%- if message['content'] is string -%}{{- message['content'] | trim }}{%- else -%}"
    "{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}{{- '<|image|>' }}"
    "{%- elif part['type'] == 'text' -%}{{- part['text'] | trim }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}{{- '<|eot_id|>' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{%- endif -%}"
)


def build_mllama():
    from transformers import (MllamaConfig, MllamaForConditionalGeneration, MllamaProcessor, MllamaTextConfig,
                              MllamaVisionConfig)
    from transformers.models.mllama.image_processing_pil_mllama import MllamaImageProcessorPil

    # <|image|> comes last and lies outside the text vocabulary, as in the real checkpoint
    tok = make_tokenizer(["<|begin_of_text|>", "<|end_of_text|>", "<|finetune_right_pad_id|>", "<|start_header_id|>",
                          "<|end_header_id|>", "<|eot_id|>", "<|python_tag|>"],
                         bos="<|begin_of_text|>", eos="<|eot_id|>", pad="<|finetune_right_pad_id|>",
                         late=["<|image|>"], extra_special_tokens={"image_token": "<|image|>"})
    images = MllamaImageProcessorPil(size={"height": 16, "width": 16}, max_image_tiles=4,
                                     image_mean=[0.5] * 3, image_std=[0.5] * 3)
    processor = MllamaProcessor(image_processor=images, tokenizer=tok, chat_template=MLLAMA_TEMPLATE)
    vision = MllamaVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_global_layers=1,
                                attention_heads=2, image_size=16, patch_size=8, max_num_tiles=4,
                                intermediate_layers_indices=[0], vision_output_dim=128)
    image_id = tok.convert_tokens_to_ids("<|image|>")
    text = MllamaTextConfig(vocab_size=image_id, num_key_value_heads=2, cross_attention_layers=[1],
                            max_position_embeddings=4096, bos_token_id=tok.bos_token_id,
                            eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, **SMALL)
    config = MllamaConfig(vision_config=vision, text_config=text, image_token_index=image_id)
    model = MllamaForConditionalGeneration(config)
    return model, processor, "<|image|>", 1


# --- Chameleon (VQ image tokens inside the vocabulary; no chat template on the hub) ---------------

def build_chameleon():
    from transformers import ChameleonConfig, ChameleonForConditionalGeneration, ChameleonProcessor
    from transformers.models.chameleon.image_processing_pil_chameleon import ChameleonImageProcessorPil

    codebook = 16
    # VQ code i is the token IMGIMG<i spelled with letters A-J>Z, as in facebook/chameleon-7b
    image_codes = ["IMGIMG" + "".join(chr(ord("A") + int(d)) for d in str(i)) + "Z" for i in range(codebook)]
    tok = make_tokenizer(["<unk>", "<s>", "</s>", "<pad>", "<image>", "<racm3:break>", "<eoss>", "<reserved08706>",
                          *image_codes],
                         bos="<s>", eos="</s>", pad="<pad>", unk_token="<unk>", sep_token="<reserved08706>",
                         extra_special_tokens={"image_token": "<image>", "boi_token": "<racm3:break>",
                                               "eoi_token": "<eoss>"})
    images = ChameleonImageProcessorPil(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16})
    # 16 px through a 2-level VQ encoder (one downsampling) -> 8x8 codes
    processor = ChameleonProcessor(image_processor=images, tokenizer=tok, image_seq_length=64)
    vq = dict(embed_dim=8, num_embeddings=codebook, latent_channels=8, resolution=16, base_channels=32,
              channel_multiplier=[1, 2], num_res_blocks=1, attn_resolutions=[])
    config = ChameleonConfig(vocab_size=len(tok), num_key_value_heads=2, max_position_embeddings=4096,
                             bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                             pad_token_id=tok.pad_token_id, vq_config=vq, vocabulary_map=tok.get_vocab(), **SMALL)
    model = ChameleonForConditionalGeneration(config)
    return model, processor, "<image>", 64


BUILDERS: dict[str, Callable] = {
    "mllama": build_mllama,
    "qwen2_vl": build_qwen2_vl,
    "qwen2_5_vl": build_qwen2_5_vl,
    "idefics3": build_idefics3,
    "llava": build_llava,
    "llava_next": build_llava_next,
    "paligemma": build_paligemma,
    "gemma3": build_gemma3,
    "chameleon": build_chameleon,
}


def save_family(model_type: str, folder: Path, seed: int = 0) -> TinyFamily:
    """Build the tiny `model_type` instance with random weights and save it to `folder`."""
    import torch

    torch.manual_seed(seed)
    model, processor, image_token, image_tokens = BUILDERS[model_type]()
    _generation_defaults(model, processor.tokenizer)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return TinyFamily(model_type, Path(folder), image_token, image_tokens, getattr(processor, "missing", None))
