"""The one model manager: owns the loaded base model, its processor and the generation lock.

Everything that generates goes through `ModelManager.stream` / `generate`. Loading picks the
device and dtype with a reason the UI and CLI show; `unload` drops every reference and returns
the memory.
"""

from __future__ import annotations

import dataclasses
import gc
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ..errors import InputError, ModelLoadError, NoModelError
from .families import fit_to_profile, profile_for
from ..lora.runtime import attach_adapter, check_adapter, detach_adapter, is_base, resident_adapters, use_adapter
from ..lora.store import usable_adapter
from ..settings import Settings


@dataclass(frozen=True)
class GenerationParams:
    """How to sample an answer. temperature 0 means greedy; seed -1 means random."""

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = -1
    num_beams: int = 1  # beam search, for generate_batch (a streamed answer is sampled or greedy)

    def __post_init__(self) -> None:
        if not 1 <= int(self.max_new_tokens) <= 8192:
            raise InputError("max new tokens must be between 1 and 8192.")
        if not 0 <= float(self.temperature) <= 5:
            raise InputError("temperature must be between 0 and 5 (0 = greedy).")
        if not 0 < float(self.top_p) <= 1:
            raise InputError("top-p must be above 0 and at most 1.")
        if not 1 <= int(self.num_beams) <= 16:
            raise InputError(f"num beams must be between 1 and 16 (got {self.num_beams}).")


@dataclass(frozen=True)
class ModelInfo:
    """What is loaded, where, and why it was loaded that way."""

    model_id: str
    source: str
    architecture: str
    device: str
    dtype: str
    reason: str

    def summary(self) -> str:
        """One line for the status bar and the terminal."""
        return f"{self.model_id} ({self.architecture}) on {self.device}, {self.dtype} — {self.reason}"


class _StopOnEvent:
    """A stopping criterion that ends generation once any of its events is set (Stop, a closed reader)."""

    def __init__(self, *events: threading.Event):
        self.events = events

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        stopped = any(event.is_set() for event in self.events)
        return torch.full((input_ids.shape[0],), stopped, dtype=torch.bool, device=input_ids.device)


class ModelManager:
    """Loads one base model at a time and serialises everything that runs on it."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.model = None
        self.processor = None
        self.info: ModelInfo | None = None
        self.decision = None  # the LoadDecision the loaded model follows
        self.active_adapter: str | None = None
        self.lock = threading.RLock()

    def load(self, model_id: str | None = None, quantization: str | None = None, token: str | None = None,
             progress=None, remember: bool = False) -> ModelInfo:
        """Load a base model by hub id, catalog key, local folder or 'demo', freeing the current one first.

        A model not on this machine is fetched through vlmchat.hub (only the files needed, `token` if
        given, else HF_TOKEN / the login file; `progress(fraction, text)` is called while downloading).
        How it is loaded is `decide_load`'s decision, made after the current model is freed.
        """
        from .decide import decide_load
        from .resolve import resolve_model

        source = resolve_model(model_id, self.settings)
        if source.kind in ("hub", "cache"):  # access check, gated/offline messages, only the needed files
            from ..hub import download_model

            found = download_model(source.model_id, token=token, progress=progress, remember=remember and bool(token))
            source = dataclasses.replace(source, kind="cache", path=found.path)
        if progress:
            progress(1.0, f"Loading {source.model_id} (the previous model is freed first)")
        with self.lock:
            self.unload()
            decision = decide_load(source, self.settings, quantization)
            if not decision.ok:
                raise ModelLoadError(decision.reason)
            model, processor = _from_pretrained(source, decision.plan.load_kwargs())
            model.eval()
            self.model, self.processor, self.decision = model, processor, decision
            self.info = ModelInfo(
                model_id=source.model_id, source=source.location, architecture=type(model).__name__,
                device=str(model.device), dtype=str(model.dtype).replace("torch.", ""), reason=decision.reason,
            )
            return self.info

    def adapter_names(self) -> list[str]:
        """Adapters attached to the loaded model, in load order."""
        return resident_adapters(self.model) if self.model is not None else []

    def load_adapter(self, name: str, path: Path) -> None:
        """Attach the LoRA adapter at `path` as `name`; the base weights stay as they are."""
        with self.lock:
            model, _ = self._loaded()
            if name in resident_adapters(model):
                return
            try:
                self.model = attach_adapter(model, name, path)
            except (ValueError, KeyError, RuntimeError, OSError) as exc:
                raise InputError(f"Adapter '{name}' does not fit the loaded model: "
                                 f"{str(exc).splitlines()[0][:300]}") from None

    def attach_named_adapter(self, name: str | None) -> None:
        """Attach adapter `name` from the adapters folder (checked against the loaded model); no-op for base."""
        if is_base(name) or name in self.adapter_names():
            return
        info = self.info
        if info is None:
            raise NoModelError("No model is loaded; load one in the Model tab or start with --model.")
        found = usable_adapter(self.settings.paths.resolve("adapters"), name, info.model_id, info.source,
                               info.architecture)
        self.load_adapter(name, found.path)

    def unload_adapter(self, name: str) -> None:
        """Detach adapter `name` and free its weights."""
        with self.lock:
            if self.model is not None:
                self.model = detach_adapter(self.model, name)
            if self.active_adapter == name:
                self.active_adapter = None

    def activate_adapter(self, name: str | None) -> None:
        """Make `name` (already loaded) the adapter Chat uses; None or 'base' for the bare base model."""
        with self.lock:
            if not is_base(name) and name not in self.adapter_names():
                raise InputError(f"Adapter '{name}' is not loaded; load it first.")
            self.active_adapter = None if is_base(name) else name

    def unload(self) -> None:
        """Drop the model and processor and give their memory back."""
        with self.lock:
            self.model = self.processor = self.info = self.decision = self.active_adapter = None
            gc.collect()
            try:
                import torch

                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            except ImportError:
                pass

    @staticmethod
    def _inputs(model, processor, conversations: list[list[dict]]):
        from jinja2 import TemplateError

        processor.tokenizer.padding_side = "left"  # batched generation continues every row at its end
        profile = profile_for(model)
        conversations = [fit_to_profile(conversation, profile) for conversation in conversations]
        template = {"chat_template": profile.chat_template} if profile.needs_template(processor) else {}
        # A conversation ending with an assistant message (a forced caption start) is continued, not answered anew.
        prefilled = bool(conversations) and conversations[0][-1].get("role") == "assistant"
        try:
            inputs = processor.apply_chat_template(
                conversations, add_generation_prompt=not prefilled, continue_final_message=prefilled,
                tokenize=True, return_dict=True, return_tensors="pt", processor_kwargs={"padding": True}, **template,
            )
        except (ValueError, TypeError, TemplateError) as exc:
            raise InputError(f"The model's processor refused this conversation: {str(exc).splitlines()[0]}") from None
        inputs = inputs.to(model.device)
        if "pixel_values" in inputs and inputs["pixel_values"].is_floating_point():
            inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
        return inputs

    def _loaded(self):
        model, processor = self.model, self.processor
        if model is None:
            raise NoModelError("No model is loaded; load one in the Model tab or start with --model.")
        return model, processor

    def stream(self, messages: list[dict], params: GenerationParams = GenerationParams(),
               stop: threading.Event | None = None, adapter: str | None = None) -> Iterator[str]:
        """Yield the answer so far, growing, until it ends or `stop` is set; `adapter` None = base."""
        from transformers import StoppingCriteriaList, TextIteratorStreamer

        stop = stop or threading.Event()
        closed = threading.Event()  # this stream's own end; `stop` may be shared by several streams
        with self.lock:
            model, processor = self._loaded()
            check_adapter(model, adapter)  # fail before starting the worker
            inputs = self._inputs(model, processor, [messages])
        streamer = TextIteratorStreamer(processor.tokenizer, skip_prompt=True, skip_special_tokens=True)
        failure: list[BaseException] = []
        kwargs = dict(inputs, streamer=streamer, max_new_tokens=int(params.max_new_tokens),
                      stopping_criteria=StoppingCriteriaList([_StopOnEvent(stop, closed)]), **_sampling(params))

        def run() -> None:
            # The lock is held by this thread for the whole generate() call, never across a yield:
            # Gradio resumes a stream from different worker threads.
            try:
                import torch

                with self.lock, torch.inference_mode(), use_adapter(model, adapter):
                    if params.seed >= 0:
                        torch.manual_seed(int(params.seed))
                    model.generate(**kwargs)
            except BaseException as exc:  # handed to the reader below
                failure.append(exc)
                streamer.end()

        worker = threading.Thread(target=run, name="vlmchat-generate", daemon=True)
        worker.start()
        text = ""
        try:
            for chunk in streamer:
                text += chunk
                yield text
        finally:
            closed.set()  # also reached when the reader is closed early (Stop button, closed tab)
        worker.join()
        if failure:
            raise _generation_error(failure[0])

    def generate(self, messages: list[dict], params: GenerationParams = GenerationParams(),
                 adapter: str | None = None) -> str:
        """The whole answer at once."""
        text = ""
        for text in self.stream(messages, params, adapter=adapter):
            pass
        return text.strip()

    def generate_batch(self, conversations: list[list[dict]], params: GenerationParams = GenerationParams(),
                       adapter: str | None = None) -> list[str]:
        """Answers to several conversations in one left-padded batch (same order as given)."""
        import torch

        with self.lock:
            model, processor = self._loaded()
            inputs = self._inputs(model, processor, conversations)
            with torch.inference_mode(), use_adapter(model, adapter):
                if params.seed >= 0:
                    torch.manual_seed(int(params.seed))
                try:
                    output = model.generate(**inputs, max_new_tokens=int(params.max_new_tokens),
                                            num_beams=int(params.num_beams), **_sampling(params))
                except Exception as exc:
                    raise _generation_error(exc) from None
        answers = processor.batch_decode(output[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
        return [answer.strip() for answer in answers]


def _from_pretrained(source, load_kwargs: dict):
    """(model, processor) from a local folder, with user-facing errors."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    name = source.model_id
    try:
        processor = AutoProcessor.from_pretrained(source.location)
        model = AutoModelForImageTextToText.from_pretrained(source.location, **load_kwargs)
    except OSError as exc:
        raise ModelLoadError(f"Could not load '{name}': {exc}".split("\n")[0] +
                             " Check the id or path, your network and your Hugging Face token.") from None
    except ValueError as exc:
        raise ModelLoadError(f"'{name}' is not a vision-language model vlmchat can load: "
                             f"{str(exc).splitlines()[0]}") from None
    except ImportError as exc:  # e.g. Qwen2-VL's processor needs torchvision for its video part
        raise ModelLoadError(f"'{name}' needs a package that is not installed: "
                             f"{str(exc).strip().splitlines()[0]}") from None
    return model, processor


def _sampling(params: GenerationParams) -> dict:
    if params.temperature <= 0:
        return {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
    return {"do_sample": True, "temperature": float(params.temperature), "top_p": float(params.top_p)}


def _generation_error(exc: BaseException) -> BaseException:
    """A user-facing error for a failure inside generate()."""
    name = type(exc).__name__
    if "OutOfMemory" in name:
        return InputError("The GPU ran out of memory while answering; lower max new tokens, use fewer or "
                          "smaller images, or load the model with 4-bit quantization.")
    return exc
