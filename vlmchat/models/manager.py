"""The one model manager: owns the loaded base model, its processor and the generation lock.

Everything that generates goes through `ModelManager.stream` / `generate`. Loading picks the
device and dtype with a reason the UI and CLI show; `unload` drops every reference and returns
the memory.

A model choice (the `adapter` argument of every generating method) is one of: None or "base" (the
bare base model), an adapter name from the adapters folder, or "endpoint:NAME" for an
OpenAI-compatible server configured as [endpoints.NAME] (or added with `add_endpoint`); the
methods then delegate to that endpoint's client and need no local model. `model_choices()` lists
them all. Single answers (`answer`, `generate`) and streams (`stream`, `stream_answer`) go through
a dynamic batcher, so requests that arrive together on the same adapter share one batch.
"""

from __future__ import annotations

import dataclasses
import gc
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ..errors import (ContextLengthError, InputError, ModelLoadError, NoModelError, VlmchatError, all_lines,
                      first_line)
from .answers import (ENDPOINT_PREFIX, Answer, GenerationParams, is_endpoint,  # noqa: F401 (re-exported)
                      local_answer, sampling_kwargs)
from .compiled import Compiled, load_note
from .cpu_speed import ModelLock, tune_for_cpu
from .families import DetailChoice, detail_for, enough_short_side, fit_to_profile, profile_for, shrink_pictures
from ..lora.runtime import attach_adapter, detach_adapter, is_base, resident_adapters, use_adapter
from ..lora.store import WEIGHTS_FILE, adapter_path, read_adapter, usable_adapter
from ..settings import Settings


@dataclass(frozen=True)
class ModelInfo:
    """What is loaded, where, and why it was loaded that way."""

    model_id: str
    source: str
    architecture: str
    device: str
    dtype: str
    reason: str
    shown: str  # the id others are shown: a model loaded from a folder is named by the folder's name on a shared
                # app (its path is a folder of the server), elsewhere model_id

    def summary(self) -> str:
        """One line for the status bar and the terminal."""
        return f"{self.shown} ({self.architecture}) on {self.device}, {self.dtype} — {self.reason}"


class ModelManager:
    """Loads one base model at a time and serialises everything that runs on it."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.model = None
        self.processor = None
        self.info: ModelInfo | None = None
        self.decision = None  # the LoadDecision the loaded model follows
        self._loaded_from = None  # (resolved source, quantization) of the loaded model: what a failed load restores
        self.active_adapter: str | None = None
        self.lock = ModelLock()
        self._swapping = threading.Lock()  # held by `load` from freeing the current model to having the next
        self.extra_endpoints: dict = {}  # NAME -> EndpointSettings added in the Model tab (not in settings.toml)
        self._endpoints: dict = {}  # NAME -> its client, made on first use
        self._batcher = None
        self._making_batcher = threading.Lock()
        self._adapter_files: dict[str, tuple] = {}  # adapter name -> its weights file as it was when loaded
        self.compiled = Compiled()  # the loaded model's compiled decode steps (on a CUDA GPU)

    def load(self, model_id: str | None = None, quantization: str | None = None, token: str | None = None,
             progress=None, remember: bool = False) -> ModelInfo:
        """Load a base model by hub id, catalog key, local folder or 'demo', freeing the current one first.

        A model not on this machine is fetched through vlmchat.hub (only the files needed, `token` if
        given, else HF_TOKEN / the login file; `progress(fraction, text)` is called while downloading).
        How it is loaded is `decide_load`'s decision, made after the current model is freed.
        """
        from .resolve import resolve_model

        source = resolve_model(model_id, self.settings)
        if source.kind in ("hub", "cache"):  # access check, gated/offline messages, only the needed files
            from ..hub import download_model

            found = download_model(source.model_id, token=token, progress=progress, remember=remember and bool(token))
            source = dataclasses.replace(source, kind="cache", path=found.path)
        if self.lock.acquire(blocking=False):
            self.lock.release()
        elif progress:  # an answer (or a batch of captions, an evaluation's) holds the model: Load looked stuck
            progress(1.0, f"Waiting for the answer being written to finish before {source.model_id} is loaded (Stop "
                          "it in Chat to load sooner)")
        with self.lock, self._swapping:
            if progress:  # once the lock is held: before, it replaced the "Waiting ..." line at once
                progress(1.0, f"Loading {source.model_id} (the previous model is freed first)")
            previous = self._loaded_from if self.model is not None else None
            self.unload()
            try:
                return self._load_source(source, quantization)
            except ModelLoadError as exc:
                if previous is None:
                    raise
                # Freed for nothing: the model that was working is loaded again, so the app is not left without one.
                try:
                    again = self._load_source(*previous)
                except Exception:  # noqa: BLE001 - said in the message; the app is left without a model
                    raise ModelLoadError(f"{exc} The previous model could not be loaded again either; load one "
                                         "in the Model tab.") from None
                raise ModelLoadError(f"{exc} {again.model_id} is loaded again.") from None

    def wait_for_load(self) -> None:
        """Return once no `load` is between freeing a model and having the next (at once when none is): what asks
        for the loaded model by name meanwhile (/v1) waits for it, as a generation waits for the lock."""
        with self._swapping:
            pass

    def _load_source(self, source, quantization: str | None) -> ModelInfo:
        """Load `source` (a resolved, local model) under the plan; call with the lock held and nothing loaded."""
        from .decide import decide_load

        decision = decide_load(source, self.settings, quantization)
        if not decision.ok:
            raise ModelLoadError(decision.reason)
        model, processor = _from_pretrained(source, decision.plan)
        model.eval()
        tune_for_cpu(model)
        self.model, self.processor, self.decision = model, processor, decision
        self.compiled = Compiled()
        self._loaded_from = (source, quantization)
        self.info = ModelInfo(
            model_id=source.model_id, source=source.location, architecture=type(model).__name__,
            device=str(model.device), dtype=str(model.dtype).replace("torch.", ""),
            reason=decision.reason + load_note(model, self.settings.model.compile, context_tokens(model)),
            shown=source.name if source.kind == "folder" and self.settings.server.exposed else source.model_id,
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
            problem = read_adapter(Path(path)).problem  # before PEFT puts any layer of it into the model
            if problem:
                raise InputError(f"Adapter '{name}' could not be loaded: {problem}.")
            self.compiled = Compiled()  # its layers change what a compiled step traced: compile (and warm up) again
            try:
                self.model = attach_adapter(model, name, path)
                self._adapter_files[name] = _weights_stamp(path)
            except Exception as exc:  # noqa: BLE001 - a file PEFT or safetensors cannot read: said, and left out
                self.model = detach_adapter(self.model, name)
                raise InputError(f"Adapter '{name}' could not be loaded onto the loaded model: "
                                 f"{all_lines(exc)}. Import it again, or "
                                 "check that it was made for this model.") from None

    def attach_named_adapter(self, name: str | None) -> None:
        """Attach adapter `name` from the adapters folder (checked against the loaded model); no-op for base.

        An endpoint name is only checked to be configured."""
        if is_endpoint(name):
            self.endpoint(name)
            return
        if is_base(name):
            return
        if self._attached_as_on_disk(name):  # the usual case, without waiting for the answer being written
            return
        # (Re)loaded under the model's lock: a request answered between the unload of an adapter trained again
        # and its load found it "not loaded" (/v1 requests naming it while another reloaded it).
        with self.lock:
            if self._attached_as_on_disk(name):  # another request reloaded it meanwhile
                return
            was_default = False
            if name in self.adapter_names():
                # Renamed or deleted since it was loaded (it is no choice any more), or trained again over it (a
                # fine-tune with overwrite): the weights in memory are not the adapter's any more.
                was_default = self.active_adapter == name
                self.unload_adapter(name)
            info = self.info
            if info is None:
                raise NoModelError("No model is loaded; load one in the Model tab or start with --model.")
            found = usable_adapter(self.settings.paths.resolve("adapters"), name, info.model_id, info.source,
                                   info.architecture)
            self.load_adapter(name, found.path)
            if was_default:  # trained again: still what new chats start with
                self.activate_adapter(name)

    def _attached_as_on_disk(self, name: str) -> bool:
        """Adapter `name` is attached and its folder's weights file is the one it was loaded from."""
        if name not in self.adapter_names():
            return False
        folder = adapter_path(self.settings.paths.resolve("adapters"), name)
        return folder.is_dir() and _weights_stamp(folder) == self._adapter_files.get(name)

    def unload_adapter(self, name: str) -> None:
        """Detach adapter `name` and free its weights."""
        with self.lock:
            self._adapter_files.pop(name, None)
            if self.model is not None:
                self.model = detach_adapter(self.model, name)
                self.compiled = Compiled()
            if self.active_adapter == name:
                self.active_adapter = None

    def activate_adapter(self, name: str | None) -> None:
        """Make `name` (already loaded) the adapter Chat uses; None or 'base' for the bare base model."""
        with self.lock:
            if is_endpoint(name):
                self.endpoint(name)
            elif not is_base(name) and name not in self.adapter_names():
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

    def detail(self, requested: str = "") -> DetailChoice:
        """The image detail a request runs at: `requested` (low/auto/high) or generation.image_detail, with why."""
        model, processor = self._loaded()
        free = None
        if model.device.type == "cuda":
            import torch

            free = torch.cuda.mem_get_info(model.device)[0] / 2**30
        return detail_for(requested or self.settings.generation.image_detail, model, processor, free)

    @staticmethod
    def _inputs(model, processor, conversations: list[list[dict]], detail: DetailChoice | None = None):
        from jinja2 import TemplateError

        processor.tokenizer.padding_side = "left"  # batched generation continues every row at its end
        profile = profile_for(model)
        conversations = [fit_to_profile(conversation, profile) for conversation in conversations]
        detail = detail or DetailChoice("high", {}, None, "", enough_short_side(processor, profile))
        conversations = shrink_pictures(conversations, detail.max_edge, detail.short_side)
        extra = detail.processor_kwargs
        template = {"chat_template": profile.chat_template} if profile.needs_template(processor) else {}
        # A conversation ending with an assistant message (a forced caption start) is continued, not answered anew.
        prefilled = bool(conversations) and conversations[0][-1].get("role") == "assistant"
        try:
            inputs = processor.apply_chat_template(
                conversations, add_generation_prompt=not prefilled, continue_final_message=prefilled,
                tokenize=True, return_dict=True, return_tensors="pt", processor_kwargs={"padding": True, **extra},
                **template,
            )
        except (ValueError, TypeError, TemplateError) as exc:
            raise InputError(f"The model's processor refused this conversation: {first_line(exc)}") from None
        mask = inputs.get("attention_mask")  # answers and eval batches alike
        _check_context(model, int(mask.sum(dim=1).max()) if mask is not None else inputs["input_ids"].shape[-1])
        inputs = inputs.to(model.device)
        if "pixel_values" in inputs and inputs["pixel_values"].is_floating_point():
            inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
        return inputs

    def _loaded(self):
        model, processor = self.model, self.processor
        if model is None:
            raise NoModelError("No model is loaded; load one in the Model tab or start with --model.")
        return model, processor

    # ---- model choices: base, adapters, endpoints -------------------------------------------------

    def endpoint_settings(self) -> dict:
        """NAME -> EndpointSettings: settings.toml's, those remembered from the Model tab, those added since start."""
        return ({entry.name: entry for entry in self.settings.endpoints}
                | {entry.name: entry for entry, _ in self._remembered()} | self.extra_endpoints)

    def _remembered(self) -> list:
        """(entry, key) of the endpoints remembered from the Model tab (outputs/endpoints.json)."""
        from .endpoints import remembered_endpoints

        return remembered_endpoints(self.settings.paths.resolve("outputs"))

    def add_endpoint(self, entry, api_key: str | None = None) -> str:
        """Make endpoint `entry` (an EndpointSettings) choosable until the app stops; returns "endpoint:NAME".

        `api_key` (from a password field) stays in memory only; None = the entry's api_key_env."""
        from .endpoints import Endpoint

        self.extra_endpoints[entry.name] = entry
        self._endpoints[entry.name] = Endpoint(entry, api_key=api_key)
        return ENDPOINT_PREFIX + entry.name

    def endpoint(self, name: str):
        """The client of endpoint "endpoint:NAME" (or bare NAME), or InputError listing the configured ones."""
        from .endpoints import Endpoint

        key = name[len(ENDPOINT_PREFIX):] if is_endpoint(name) else name
        if key not in self._endpoints:
            entries = self.endpoint_settings()
            if key not in entries:
                raise InputError(f"There is no endpoint named '{key}'; configured: "
                                 f"{', '.join(entries) or 'none'} (add one as [endpoints.{key}] in settings.toml).")
            remembered_key = {entry.name: api_key for entry, api_key in self._remembered()}.get(key)
            self._endpoints[key] = Endpoint(entries[key], api_key=remembered_key)
        return self._endpoints[key]

    def _by_room(self, conversations, params, adapter, streams, caps: list[int]) -> list[Answer]:
        """`answer_batch` of rows with different room left in the context: one batch per room (call with the lock),
        so a short question batched with a long one keeps its max new tokens (a reviewer's: 151 tokens alone, 24
        beside a 1,000-token prompt)."""
        answers: list = [None] * len(conversations)
        for cap in sorted(set(caps)):
            rows = [index for index, room in enumerate(caps) if room == cap]
            got = self.answer_batch([conversations[i] for i in rows], dataclasses.replace(params, max_new_tokens=cap),
                                    adapter, [streams[i] for i in rows] if streams else None)
            for index, answer in zip(rows, got):
                answers[index] = answer
        return answers

    def close_endpoints(self) -> list:
        """Every endpoint client closed (at quit); the threads of requests still waiting on a server."""
        return [thread for endpoint in self._endpoints.values() for thread in endpoint.close()]

    def model_choices(self) -> list[str]:
        """Every model a request may name: "base", the adapters that fit the loaded model, "endpoint:NAME"s."""
        from ..lora.store import incompatibility, list_adapters

        local = []
        if self.info is not None:
            info = self.info
            local = ["base"] + [a.name for a in list_adapters(self.settings.paths.resolve("adapters"))
                                if not incompatibility(a, info.model_id, info.source, info.architecture)]
        return local + [ENDPOINT_PREFIX + name for name in self.endpoint_settings()]

    # ---- generation ---------------------------------------------------------------------------------

    def stream(self, messages: list[dict], params: GenerationParams = GenerationParams(),
               stop: threading.Event | None = None, adapter: str | None = None) -> Iterator[str]:
        """Yield the answer so far, growing, until it ends or `stop` is set; `adapter` None = base."""
        for answer in self.stream_answer(messages, params, stop, adapter):
            yield answer.text

    def stream_answer(self, messages: list[dict], params: GenerationParams = GenerationParams(),
                      stop: threading.Event | None = None, adapter: str | None = None,
                      ticket=None) -> Iterator[Answer]:
        """Yield the Answer so far, growing (done=False), then the finished one with its tokens and times.

        A local answer is one row of a batch of the streams that arrive together (sampled or greedy, never beam
        search); `ticket` as for `answer`."""
        if is_endpoint(adapter):
            yield from self.endpoint(adapter).stream(messages, params, stop)
            return
        yield from self.batcher.stream(messages, dataclasses.replace(params, num_beams=1),
                                       None if is_base(adapter) else adapter, ticket, stop)

    def generate(self, messages: list[dict], params: GenerationParams = GenerationParams(),
                 adapter: str | None = None) -> str:
        """The whole answer at once (batched with other requests that arrive together)."""
        return self.answer(messages, params, adapter).text

    def answer(self, messages: list[dict], params: GenerationParams = GenerationParams(),
               adapter: str | None = None, ticket=None) -> Answer:
        """The whole Answer to one conversation: through the dynamic batcher, or the endpoint.

        `ticket`: an admission the caller took from `batcher.admit()` as the request arrived (the /v1
        server does, so a batch waits for requests still being read); None = admitted here."""
        if is_endpoint(adapter):
            return self.endpoint(adapter).answer(messages, params)
        started = time.perf_counter()
        found = self.batcher.submit(messages, params, None if is_base(adapter) else adapter, ticket)
        return dataclasses.replace(found, latency_s=time.perf_counter() - started)

    @property
    def batcher(self):
        """The dynamic batcher in front of `answer_batch` (made on first use, from [api] and [server])."""
        with self._making_batcher:  # two first requests at once must not make two batchers
            if self._batcher is None:
                from .batcher import Batcher

                api = self.settings.api
                self._batcher = Batcher(self.answer_batch, max_batch=api.max_batch,
                                        window_s=api.batch_window_ms / 1000, max_queue=self.settings.server.max_queue)
        return self._batcher

    def generate_batch(self, conversations: list[list[dict]], params: GenerationParams = GenerationParams(),
                       adapter: str | None = None) -> list[str]:
        """Answers to several conversations in one left-padded batch (same order as given)."""
        return [answer.text for answer in self.answer_batch(conversations, params, adapter)]

    def generate_each(self, conversations: list[list[dict]], params: GenerationParams = GenerationParams(),
                      adapter: str | None = None) -> list[str | VlmchatError]:
        """answer_each's texts, each failed conversation's error in its place."""
        return [answer if isinstance(answer, VlmchatError) else answer.text
                for answer in self.answer_each(conversations, params, adapter)]

    def answer_each(self, conversations: list[list[dict]], params: GenerationParams = GenerationParams(),
                    adapter: str | None = None) -> list[Answer | VlmchatError]:
        """Like answer_batch, but a conversation that cannot be answered gets its error in its place: a local batch
        that fails as a whole is answered one conversation at a time, an endpoint's requests fail one by one (none
        is sent twice). Batch runs (Caption, Evaluate) go on with the others."""
        if is_endpoint(adapter):
            return self.endpoint(adapter).answer_each(conversations, params)
        try:
            return list(self.answer_batch(conversations, params, adapter))
        except NoModelError:
            raise
        except VlmchatError as exc:
            if len(conversations) == 1:
                return [exc]
        return [answer for conversation in conversations
                for answer in self.answer_each([conversation], params, adapter)]

    def answer_batch(self, conversations: list[list[dict]], params: GenerationParams = GenerationParams(),
                     adapter: str | None = None, streams: list | None = None) -> list[Answer]:
        """Answers with their tokens and times: one local batch, or up to max_concurrency endpoint requests.

        `streams`: a batcher RowStream per conversation (None for one answered only whole), each shown its row's
        answer as it grows and given its finished Answer as soon as its row ends."""
        if is_endpoint(adapter):
            return self.endpoint(adapter).answer_batch(conversations, params)
        import torch
        from transformers import StoppingCriteriaList

        from .batcher import RowStreamer

        started = time.perf_counter()
        with self.lock:
            model, processor = self._loaded()
            inputs = self._inputs(model, processor, conversations, self.detail(params.image_detail))
            prompts = inputs["attention_mask"].sum(dim=1).tolist()
            caps = [_room(model, params.max_new_tokens, prompt) for prompt in prompts]
            if len(set(caps)) > 1:  # a row near the context's end: each row keeps its own room (rare: answered apart)
                return self._by_room(conversations, params, adapter, streams, caps)
            params = dataclasses.replace(params, max_new_tokens=caps[0])
            streamed = {}
            if streams and any(streams):
                rows = RowStreamer(streams, prompts, params, model, processor, adapter)
                streamed = {"streamer": rows, "stopping_criteria": StoppingCriteriaList([rows])}
            with torch.inference_mode(), use_adapter(model, adapter):
                width = inputs["input_ids"].shape[1]
                decode = self.compiled.decode(
                    model, self.settings.model.compile, inputs["input_ids"].shape[0] * int(params.num_beams),
                    width + int(params.max_new_tokens), None if is_base(adapter) else adapter, context_tokens(model),
                    lambda static: model.generate(**inputs, max_new_tokens=3, min_new_tokens=3,
                                                  **sampling_kwargs(GenerationParams(), processor), **static),
                    new_tokens=int(params.max_new_tokens))
                if params.seed >= 0:
                    torch.manual_seed(int(params.seed))
                try:
                    output = model.generate(**inputs, max_new_tokens=int(params.max_new_tokens),
                                            num_beams=int(params.num_beams), **sampling_kwargs(params, processor),
                                            **decode.kwargs, **streamed)
                except Exception as exc:
                    self.compiled.settle(worked=False)
                    raise _generation_error(exc) from None
                self.compiled.settle(worked=True)
        seconds = time.perf_counter() - started
        texts = processor.batch_decode(output[:, width:], skip_special_tokens=True)
        return [local_answer(text, row, int(prompt), params, model, processor, adapter, seconds)
                for text, row, prompt in zip(texts, output[:, width:].tolist(), prompts)]


def _from_pretrained(source, plan):
    """(model, processor) from a local folder, loaded as `plan` says, with user-facing errors."""
    from safetensors import SafetensorError
    from transformers import AutoModelForImageTextToText, AutoProcessor

    name = source.model_id
    try:
        processor = AutoProcessor.from_pretrained(source.location)
        model = AutoModelForImageTextToText.from_pretrained(source.location, **plan.load_kwargs(source.location))
    except SafetensorError as exc:  # a weights file cut short or damaged (an interrupted copy or download)
        raise ModelLoadError(f"'{name}' has a damaged weights file ({first_line(exc)}); download or copy "
                             "the model again.") from None
    except OSError as exc:
        raise ModelLoadError(f"Could not load '{name}': {exc}".split("\n")[0] +
                             " Check the id or path, your network and your Hugging Face token.") from None
    except ValueError as exc:
        raise ModelLoadError(f"'{name}' is not a vision-language model vlmchat can load: "
                             f"{first_line(exc)}") from None
    except ImportError as exc:  # e.g. Qwen2-VL's processor needs torchvision for its video part
        raise ModelLoadError(f"'{name}' needs a package that is not installed: "
                             f"{first_line(exc)}") from None
    return model, processor


def context_tokens(model) -> int | None:
    """The most tokens the model's language model reads (its config's max_position_embeddings), None if unsaid."""
    config = model.config
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return getattr(text, "max_position_embeddings", None) or getattr(config, "max_position_embeddings", None)


def _check_context(model, prompt_tokens: int) -> None:
    """ContextLengthError for a prompt the model cannot read whole (at once, instead of minutes of a long forward
    pass ending in an answer made of noise)."""
    limit = context_tokens(model)
    if limit and prompt_tokens >= limit:
        raise ContextLengthError(f"This conversation is {prompt_tokens:,} tokens, pictures included; the model reads "
                                 f"at most {limit:,}. Shorten it, send fewer or smaller pictures (image detail low), "
                                 "or start a new chat.")


def _room(model, max_new_tokens: int, prompt_tokens: int) -> int:
    """`max_new_tokens` cut to the positions the model has left after the prompt (the answer then ends with
    finish_reason "length"): decoding past max_position_embeddings makes noise, or fails on learned positions."""
    limit = context_tokens(model)
    return min(max_new_tokens, max(1, limit - prompt_tokens)) if limit else max_new_tokens


def _generation_error(exc: BaseException) -> BaseException:
    """A user-facing error for a failure inside generate()."""
    name = type(exc).__name__
    if "OutOfMemory" in name:
        return InputError("The GPU ran out of memory while answering; lower max new tokens, use fewer or "
                          "smaller images, or load the model with 4-bit quantization.")
    return exc


def _weights_stamp(folder) -> tuple | None:
    """What tells an adapter's weights file from another written in its place: inode, size, modification time."""
    try:
        found = (Path(folder) / WEIGHTS_FILE).stat()
    except OSError:
        return None
    return found.st_ino, found.st_size, found.st_mtime_ns


