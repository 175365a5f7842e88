"""Scoring eval items on the one loaded model: multiple choice by log-likelihood or by generation, captions.

`score_loglik` is the default for multiple choice. Every option is scored as the assistant's whole
answer: the sum of the log-probabilities of the option's *text* and the end-of-turn token after the
prompt. lm-evaluation-harness's MMLU scores the letters " A"/" B" instead; that works for models
trained on that exam format, but a chat model answers with words, and a bare letter gets almost no
probability, so the letter scores are noise: on the demo model (which answers "red") the letters
together get ~1e-10 and pick the right one 12% of the time on 96 held-out questions (chance 29%),
the option texts 100%. The option text is what such a model would say, and scoring the end of
turn too makes "red" and "red circle" different answers. Each question's image + prompt prefix is encoded once and shared by its options through
the KV cache (`DynamicCache.batch_select_indices`), then all options of a batch of questions are
scored in one forward pass. `acc` picks the highest sum, `acc_norm` the highest sum per character
of the option text (as lm-evaluation-harness does). When several models score one batch (base and
adapters), what does not depend on the adapter is done once (`BatchWork`): the processor's inputs, the
options' token ids and, for every adapter that leaves the vision tower and projector alone, the
pictures' encodings (the vision tower is ~75% of a SmolVLM-256M question at low detail).

`score_generate` asks for an answer (greedy or beam search, few tokens, left-padded batches) and
parses it with `metrics.parse_answer`; `score_captions` generates captions and computes
`metrics.caption_metrics`. Every function holds `manager.lock` for one batch only.
"""

from __future__ import annotations

import contextlib
import inspect
import time
from dataclasses import dataclass, field

from PIL import Image

from ..errors import InputError, NoModelError, VlmchatError
from ..lora.runtime import use_adapter
from ..models.families import fit_to_profile, profile_for
from ..models.manager import GenerationParams, ModelManager
from ..models.sizes import VISION_PARTS
from .metrics import caption_metrics, parse_answer
from .sets import EvalItem

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
# Options first, the question last and no instruction after it: a chat model answers the last thing
# it is asked, with one of the options it has just read (as text or letter; both are understood by
# the generate parser). Measured on the demo model over 96 held-out questions: this layout 100% acc
# and acc_norm; question, options, then "Answer with one of the options." 92.7% acc, 83.3% acc_norm
# (the trailing instruction pulls the answer away from a bare option).
CHOICE_TEMPLATE = "Options:\n{options}\nQuestion: {question}"


@dataclass
class ItemScore:
    """How one model did on one item."""

    predicted: int | None = None          # option index by the summed log-prob (loglik) or the parsed answer
    predicted_norm: int | None = None     # option index by log-prob per character (loglik only)
    correct: bool = False                 # captions: keyword match
    correct_norm: bool | None = None      # loglik only
    scores: tuple[float, ...] = ()        # summed log-prob of each option (loglik)
    text: str = ""                        # the generated answer or caption, raw
    seconds: float = 0.0                  # this item's share of its batch's time
    metrics: dict = field(default_factory=dict)


def loaded(manager: ModelManager):
    """(model, processor) of the manager, or NoModelError."""
    if manager.model is None:
        raise NoModelError("No model is loaded; load one in the Model tab or start with --model.")
    return manager.model, manager.processor


def choice_prompt(item: EvalItem) -> str:
    """The options as lines 'A. text', then the question."""
    return choice_text(item.question, item.options)


def choice_text(question: str, options) -> str:
    """A multiple-choice question as the model is asked it (the demo model is trained on this layout too)."""
    lines = "\n".join(f"{LETTERS[i]}. {option}" for i, option in enumerate(options))
    return CHOICE_TEMPLATE.format(options=lines, question=question)


def user_turn(images: list[Image.Image], text: str) -> list[dict]:
    """A one-message conversation: the images first, then the text."""
    parts = [{"type": "image", "image": image} for image in images] + [{"type": "text", "text": text}]
    return [{"role": "user", "content": parts}]


def _answer_turn(text: str) -> dict:
    return {"role": "assistant", "content": [{"type": "text", "text": text}]}


def _render(model, processor, conversations: list[list[dict]], generation_prompt: bool) -> list[str]:
    """The conversations as the chat template writes them (one call for all: its overhead is per call)."""
    profile = profile_for(model)
    template = {"chat_template": profile.chat_template} if profile.needs_template(processor) else {}
    return processor.apply_chat_template([fit_to_profile(c, profile) for c in conversations], tokenize=False,
                                         add_generation_prompt=generation_prompt, **template)


def _end_ids(model, tokenizer) -> set[int]:
    ids = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = set(ids if isinstance(ids, list) else [ids] if ids is not None else [])
    return ids | ({tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set())


def continuations(model, processor, conversation: list[dict], options: tuple[str, ...]) -> list[list[int]]:
    """Token ids of each option as the answer turn (its text and the end of turn) after the prompt."""
    return batch_continuations(model, processor, [conversation], [options])[0]


def batch_continuations(model, processor, conversations: list[list[dict]],
                        option_lists: list[tuple[str, ...]]) -> list[list[list[int]]]:
    """`continuations` of a batch of questions, rendered and tokenized in a few calls for the whole batch.

    Every answer turn is rendered after its own question: a template may write it differently per question."""
    tokenizer = processor.tokenizer
    prefixes = _render(model, processor, conversations, True)
    fulls = _render(model, processor, [c + [_answer_turn(option)] for c, options in zip(conversations, option_lists)
                                       for option in options], False)
    prefix_ids = tokenizer(prefixes, add_special_tokens=False).input_ids
    full_ids = iter(zip(fulls, tokenizer(fulls, add_special_tokens=False).input_ids))
    ends = _end_ids(model, tokenizer)
    out = []
    for prefix, ids, options in zip(prefixes, prefix_ids, option_lists):
        conts = []
        for _ in options:
            full_text, full = next(full_ids)
            if not full_text.startswith(prefix) or len(full_text) == len(prefix):
                raise InputError("This model's chat template does not write an answer after the prompt, so options "
                                 "cannot be scored by log-likelihood; use --method generate.")
            # Byte-level BPE may merge across the boundary; the model then continues from the prefix's own
            # tokens, so the answer is tokenized on its own, as generation would have produced it.
            rest = (full[len(ids):] if full[:len(ids)] == ids
                    else tokenizer(full_text[len(prefix):], add_special_tokens=False).input_ids)
            # The template's text after the end-of-turn token (a newline) is the same for every option.
            cut = next((i + 1 for i, token in enumerate(rest) if token in ends), len(rest))
            conts.append(rest[:cut])
        out.append(conts)
    return out


def _base(model):
    return getattr(model, "get_base_model", lambda: model)()


def _keep_last(model) -> dict:
    """`logits_to_keep=1` where the model takes it: the prefix pass needs only its last position."""
    return {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(_base(model).forward).parameters else {}


def _rope_positions(model, attention, rows: list[int], width: int) -> dict:
    """Position ids for models that keep a per-row rotary offset after the prefix (Qwen2-VL's M-RoPE `rope_deltas`).

    Their forward cannot place new tokens after a cache from a 2-D mask; this is the formula their
    `generate` uses (mask-aware text positions plus the row's offset). Other models need nothing.
    """
    deltas = getattr(getattr(_base(model), "model", None), "rope_deltas", None)
    if deltas is None:
        return {}
    text = (attention.long().cumsum(-1) - 1)[:, -width:]
    return {"position_ids": text[None] + deltas[rows].to(text.device)}


def _continue(model, cache, prefix_mask, rows, flat: list[list[int]], pad_id: int):
    """Log-probs of tokens 2..n of every continuation, run on the prefix cache expanded to one row per option."""
    import torch

    device = prefix_mask.device
    cache.batch_select_indices(torch.tensor(rows, device=device))
    width = max(len(ids) for ids in flat) - 1
    inputs = torch.full((len(flat), width), pad_id, dtype=torch.long, device=device)
    targets = torch.zeros_like(inputs)
    mask = torch.zeros_like(inputs)
    for row, ids in enumerate(flat):
        inputs[row, :len(ids) - 1] = torch.tensor(ids[:-1])
        targets[row, :len(ids) - 1] = torch.tensor(ids[1:])
        mask[row, :len(ids) - 1] = 1
    # Right padding after the real tokens: a causal model's earlier positions never see it.
    attention = torch.cat([prefix_mask[rows], mask], dim=1)
    logits = model(input_ids=inputs, attention_mask=attention, past_key_values=cache, use_cache=True,
                   **_rope_positions(model, attention, rows, width)).logits.float()
    picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)
    return (picked * mask).sum(dim=1)


def option_logprobs(model, processor, conversations: list[list[dict]], conts: list[list[list[int]]],
                    detail=None, inputs=None) -> list[list[float]]:
    """Summed log-prob of each continuation, each prefix run once (call under inference_mode).

    `inputs`: the processor's inputs for `conversations` when already made."""
    import torch

    inputs = inputs if inputs is not None else ModelManager._inputs(model, processor, conversations, detail)
    out = model(**inputs, use_cache=True, **_keep_last(model))
    first = torch.log_softmax(out.logits[:, -1].float(), dim=-1)
    rows = [q for q, options in enumerate(conts) for _ in options]
    flat = [ids for options in conts for ids in options]
    totals = first[rows, [ids[0] for ids in flat]]
    if max(len(ids) for ids in flat) > 1:
        pad_id = processor.tokenizer.pad_token_id or 0
        totals = totals + _continue(model, out.past_key_values, inputs["attention_mask"], rows, flat, pad_id)
    totals = totals.tolist()
    nested, start = [], 0
    for options in conts:
        nested.append(totals[start:start + len(options)])
        start += len(options)
    return nested


class BatchWork:
    """What every model scoring the same batch shares: made by the first, reused by the others."""

    def __init__(self, detail=None, sharing: int = 1):
        self.detail = detail                     # the run's DetailChoice (None: the manager's default)
        self.sharing = max(1, sharing)           # how many models score the batch: each is timed a share of...
        self.shared_s = 0.0                      # ...the seconds spent on what they share (made by the first)
        self.prepared: dict[tuple, tuple] = {}   # item ids -> (continuations, processor inputs)
        self.pictures: dict[int, tuple] = {}     # id(pixel_values) -> (pixel_values, the vision tower's output)
        self.vision_free: dict[str, bool] = {}   # adapter -> it leaves the vision tower and projector alone

    def prepare(self, manager: ModelManager, items: list[EvalItem], conversations: list[list[dict]]) -> tuple:
        """(continuations, inputs) of this batch of items, made once (call under the manager's lock)."""
        key = tuple(map(id, items))
        if key not in self.prepared:
            started = time.perf_counter()
            model, processor = loaded(manager)
            conts = batch_continuations(model, processor, conversations, [item.options for item in items])
            detail = self.detail or manager.detail()
            self.prepared[key] = conts, ModelManager._inputs(model, processor, conversations, detail)
            self.shared_s += time.perf_counter() - started
        return self.prepared[key]

    def reuse_pictures(self, model, adapter: str | None):
        """A context in which the model's vision tower answers pictures it has seen from this batch's store
        (nothing is reused under an adapter that changes the vision tower or projector)."""
        inner = getattr(_base(model), "model", None)
        if not hasattr(inner, "get_image_features") or not self._vision_free(model, adapter):
            return contextlib.nullcontext()
        return self._memoized(inner)

    def _vision_free(self, model, adapter: str | None) -> bool:
        if not getattr(model, "peft_config", None):
            return True  # no adapter attached (and no import of peft, ~3 s, inside the first timed batch)
        if adapter not in self.vision_free:
            from peft.tuners.tuners_utils import BaseTunerLayer

            self.vision_free[adapter] = not any(
                isinstance(module, BaseTunerLayer) and adapter in getattr(module, "lora_A", {})
                and VISION_PARTS.search(name) for name, module in model.named_modules())
        return self.vision_free[adapter]

    @contextlib.contextmanager
    def _memoized(self, inner):
        encode = inner.get_image_features

        def memo(*args, **kwargs):
            pixels = kwargs.get("pixel_values", args[0] if args else None)
            if id(pixels) not in self.pictures:
                started = time.perf_counter()
                self.pictures[id(pixels)] = pixels, encode(*args, **kwargs)
                self.shared_s += time.perf_counter() - started
            return self.pictures[id(pixels)][1]

        inner.get_image_features = memo
        try:
            yield
        finally:
            del inner.get_image_features


def per_character(scores, options) -> list[float]:
    """Each option's summed log-prob divided by its text's length (acc_norm's score, as lm-evaluation-harness's)."""
    return [score / max(len(option), 1) for score, option in zip(scores, options)]


def _argmax(values) -> int:
    return max(range(len(values)), key=values.__getitem__)


def score_loglik(manager: ModelManager, items: list[EvalItem], images: list[list[Image.Image]],
                 adapter: str | None, work: BatchWork | None = None) -> list[ItemScore]:
    """Multiple-choice items scored by the log-likelihood of each option's text as the answer.

    `work`: the batch's shared work when several models score it (run_eval passes one per batch)."""
    import torch

    work = work or BatchWork()
    conversations = [user_turn(pictures, choice_prompt(item)) for item, pictures in zip(items, images)]
    started, shared_before = time.perf_counter(), work.shared_s
    with manager.lock:
        model, processor = loaded(manager)  # attaching an adapter may have wrapped the model meanwhile
        conts, inputs = work.prepare(manager, items, conversations)
        with torch.inference_mode(), use_adapter(model, adapter), work.reuse_pictures(model, adapter):
            sums = option_logprobs(model, processor, conversations, conts, inputs=inputs)
    # its own time, and its share of the work the models share (the first made it all: the base looked 2x slower
    # than its adapters in the same run)
    own = time.perf_counter() - started - (work.shared_s - shared_before)
    seconds = (own + work.shared_s / work.sharing) / len(items)
    out = []
    for item, scores in zip(items, sums):
        best = _argmax(scores)
        best_norm = _argmax(per_character(scores, item.options))
        out.append(ItemScore(predicted=best, predicted_norm=best_norm, correct=best == item.answer,
                             correct_norm=best_norm == item.answer, scores=tuple(scores), seconds=seconds))
    return out


def _generated(manager: ModelManager, prompts: list[str], images: list[list[Image.Image]], adapter: str | None,
               max_new_tokens: int, num_beams: int, image_detail: str = "") -> tuple[list[str | VlmchatError], float]:
    """(greedy or beam-search answers to one left-padded batch, seconds per item) via the manager."""
    conversations = [user_turn(pictures, prompt) for prompt, pictures in zip(prompts, images)]
    started = time.perf_counter()
    texts = manager.generate_each(conversations, GenerationParams(max_new_tokens=int(max_new_tokens),
                                                                  num_beams=int(num_beams),
                                                                  image_detail=image_detail), adapter)
    return texts, (time.perf_counter() - started) / len(prompts)


def score_generate(manager: ModelManager, items: list[EvalItem], images: list[list[Image.Image]],
                   adapter: str | None, max_new_tokens: int = 16, num_beams: int = 1,
                   image_detail: str = "") -> list[ItemScore | VlmchatError]:
    """Multiple-choice items answered by generation and parsed (letter or option text)."""
    texts, seconds = _generated(manager, [choice_prompt(item) for item in items], images, adapter, max_new_tokens,
                                num_beams, image_detail)
    out: list[ItemScore | VlmchatError] = []
    for item, text in zip(items, texts):
        if isinstance(text, VlmchatError):  # this question alone could not be answered: the run says why
            out.append(text)
            continue
        predicted = parse_answer(text, item.options)
        out.append(ItemScore(predicted=predicted, correct=predicted is not None and predicted == item.answer,
                             text=text, seconds=seconds))
    return out


def score_captions(manager: ModelManager, items: list[EvalItem], images: list[list[Image.Image]],
                   adapter: str | None, max_new_tokens: int = 64, num_beams: int = 1,
                   image_detail: str = "") -> list[ItemScore | VlmchatError]:
    """Caption items: a generated caption and its metrics against the references."""
    default_prompt = manager.settings.caption.prompt
    texts, seconds = _generated(manager, [item.question.strip() or default_prompt for item in items], images, adapter,
                                max_new_tokens, num_beams, image_detail)
    out: list[ItemScore | VlmchatError] = []
    for item, text in zip(items, texts):
        if isinstance(text, VlmchatError):
            out.append(text)
            continue
        found = caption_metrics(text, item.references)
        out.append(ItemScore(correct=found["keywords"], text=text, seconds=seconds, metrics=found))
    return out
