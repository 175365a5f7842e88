"""What a generation is asked for and what it gives back: GenerationParams in, Answer out.

`Answer` carries the text with its cost (tokens, seconds, dollars for a priced endpoint), the same
for a local model and an OpenAI-compatible endpoint. A model choice naming an endpoint starts with
ENDPOINT_PREFIX ("endpoint:NAME"); adapter names cannot contain ':', so the rule is unambiguous.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import FieldError, InputError
from ..settings import MAX_NEW_TOKENS, MAX_SEED, MAX_TEMPERATURE, MIN_TOP_P
from .families import check_image_detail


# How often a stream waiting for its next piece (a slow prefill, an endpoint that has not answered yet) looks whether
# it was stopped: Gradio's Stop waits for the handler's thread, so a wait without this held Stop, and the chat's next
# question was lost, until the endpoint's timeout.
STOP_CHECK_S = 0.2


@dataclass(frozen=True)
class GenerationParams:
    """How to sample an answer. temperature 0 means greedy; seed -1 means random."""

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = -1
    num_beams: int = 1  # beam search, for generate_batch (a streamed answer is sampled or greedy)
    stop_strings: tuple[str, ...] = ()  # the answer ends before the first of these (OpenAI's `stop`)
    image_detail: str = ""  # "low" / "auto" / "high" (OpenAI's image_url.detail); "" = generation.image_detail

    def __post_init__(self) -> None:
        if not 1 <= int(self.max_new_tokens) <= MAX_NEW_TOKENS:
            raise FieldError("max_new_tokens", f"max new tokens must be between 1 and {MAX_NEW_TOKENS}.")
        if not 0 <= float(self.temperature) <= MAX_TEMPERATURE:
            raise FieldError("temperature", f"temperature must be between 0 and {MAX_TEMPERATURE:g} (0 = greedy).")
        if not MIN_TOP_P <= float(self.top_p) <= 1:
            raise FieldError("top_p", f"top-p must be between {MIN_TOP_P:g} and 1.")
        if int(self.seed) > MAX_SEED:
            raise FieldError("seed", f"seed must be at most {MAX_SEED} (a 64-bit integer; -1 = random).")
        if not 1 <= int(self.num_beams) <= 16:
            raise InputError(f"num beams must be between 1 and 16 (got {self.num_beams}).")
        if len(self.stop_strings) > 4 or not all(isinstance(s, str) and s for s in self.stop_strings):
            raise FieldError("stop_strings", "stop must be at most 4 non-empty strings.")
        check_image_detail(self.image_detail)


EMPTY_ANSWER = "The model returned an empty answer; rephrase the question or raise max new tokens."


@dataclass(frozen=True)
class Answer:
    """One answer with what it cost: tokens, seconds and (for a priced endpoint) US dollars."""

    text: str
    model: str = ""                 # "base", an adapter name or "endpoint:NAME"
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_s: float = 0.0          # request to last token (queue wait included)
    first_token_s: float | None = None  # request to first token, for streamed answers
    cost_usd: float | None = None   # None: no price is set (local models, unpriced endpoints)
    finish_reason: str = "stop"     # "stop" (end or stop string), "length" (max new tokens reached) or, in
                                    # Compare, "error" (the side failed; its text says why)
    done: bool = True               # False while a stream is still growing

    @property
    def tokens_per_s(self) -> float | None:
        """Output tokens per second of this answer."""
        if not self.completion_tokens or self.latency_s <= 0:
            return None
        return self.completion_tokens / self.latency_s


ENDPOINT_PREFIX = "endpoint:"


def is_endpoint(name: str | None) -> bool:
    """True when a model choice names an OpenAI-compatible endpoint ("endpoint:NAME")."""
    return isinstance(name, str) and name.startswith(ENDPOINT_PREFIX)


def endpoint_choice(name: str) -> str:
    """The model choice "endpoint:NAME" of an endpoint given as NAME or as "endpoint:NAME" (as the list writes it)."""
    return ENDPOINT_PREFIX + name.removeprefix(ENDPOINT_PREFIX)


def cut_at_stop(text: str, stops: tuple[str, ...], final: bool = True) -> tuple[str, bool]:
    """(`text` before the first stop string, whether one was found); while not `final`, an end that may
    begin a stop string is held back too, so a stream never shows part of one."""
    found = [text.find(stop) for stop in stops if stop in text]
    if found:
        return text[:min(found)], True
    if not final:
        held = max((k for stop in stops for k in range(1, len(stop)) if text.endswith(stop[:k])), default=0)
        return text[:len(text) - held], False
    return text, False


def sampling_kwargs(params: GenerationParams, processor) -> dict:
    """generate() keyword arguments for `params`: greedy or sampled, and the stop strings."""
    stops = {"stop_strings": list(params.stop_strings), "tokenizer": processor.tokenizer} if params.stop_strings else {}
    if params.temperature <= 0:
        return {"do_sample": False, "temperature": None, "top_p": None, "top_k": None, **stops}
    return {"do_sample": True, "temperature": float(params.temperature), "top_p": float(params.top_p), **stops}


def local_answer(text: str, row: list[int], prompt_tokens: int, params: GenerationParams, model, processor,
                 adapter: str | None, seconds: float, first_token_s: float | None = None,
                 strip: bool = True) -> Answer:
    """An Answer from one generated row: tokens up to the end of turn (counted) or padding (not counted);
    a streamed answer keeps its text unstripped, so it goes on from what was shown."""
    from ..evaluate.score import _end_ids

    ends, pad = _end_ids(model, processor.tokenizer), processor.tokenizer.pad_token_id
    count = next((i + (token in ends) for i, token in enumerate(row) if token in ends or token == pad), len(row))
    ended = count < len(row) or (row and row[-1] in ends)
    text, stopped = cut_at_stop(text, params.stop_strings)
    length = not ended and not stopped and count >= params.max_new_tokens
    # cut at a stop string, the text is what comes before it, as OpenAI returns it and a stream showed it
    return Answer(text.strip() if strip and not stopped else text, model=adapter or "base", prompt_tokens=prompt_tokens,
                  completion_tokens=count, latency_s=seconds, first_token_s=first_token_s,
                  finish_reason="length" if length else "stop")
