"""Captioning: one image, or thousands in batches, with nothing overwritten and nothing lost.

`caption_image` answers one picture. `caption_images` captions many: it skips images that already
have a caption (unless overwrite), sorts the rest by size, decodes each batch first (a bad file is
reported with its reason and the batch goes on without it; the next batch is decoded while this one
is generated), generates with `ModelManager.generate_batch`, stores each caption through a store from `caption_io`, reports
progress (done, total, images/s, ETA) and stops between batches when `cancel` is set, keeping
everything done so far. The UI (vlmchat/ui/caption_tab.py) and the CLI (`launch.py caption`)
are thin layers over these two functions.
"""

from __future__ import annotations

import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from PIL import Image

from .io import FORMATS, TableCaptions, TxtCaptions, caption_path, find_images, open_captions  # noqa: F401 (re-exported)
from ..errors import EndpointUnusable, InputError, VlmchatError
from ..files import shown_name
from ..images import ImageSource, load_image
from ..lora.runtime import is_base
from ..models.manager import GenerationParams, ModelManager, is_endpoint
from ..settings import Settings

PRESETS = {
    "Short caption": "Describe the image.",
    "Detailed description": "Describe this image in detail.",
    "Tags": "List tags for this image, separated by commas.",
}
EMPTY_CAPTION = "the model returned an empty caption; try another prompt or raise max new tokens"


@dataclass(frozen=True)
class CaptionOptions:
    """How to caption a batch: what to ask, with which adapter, where to write, how many at once."""

    prompt: str = ""  # "" = settings' caption.prompt
    start: str = ""  # forced caption start, e.g. "A photo of"; kept in the caption
    prefix: str = ""  # written before every caption as it is, e.g. a LoRA's trigger word "ohwx, "
    suffix: str = ""  # written after every caption as it is
    adapter: str | None = None  # None, "" or "base" = the base model; "endpoint:NAME" = an OpenAI-compatible server
    fmt: str = "txt"
    output: Path | None = None  # the JSONL/CSV file (txt captions go beside each image)
    overwrite: bool = False
    batch_size: int | str = "auto"
    max_bytes: int | None = None  # per image file; None = no limit beyond the pixel guard

    def check(self) -> None:
        """Raise InputError for a wrong format, output or batch size before any model is loaded."""
        if self.fmt not in FORMATS:
            raise InputError(f"Caption format '{self.fmt}' is not supported; use one of {', '.join(FORMATS)}.")
        if (self.fmt == "txt") != (self.output is None):
            raise InputError("--output is for jsonl/csv; .txt captions are written beside each image."
                             if self.fmt == "txt" else f"A {self.fmt} caption file needs an output path.")
        if self.batch_size != "auto" and not 1 <= int(self.batch_size) <= 256:
            raise InputError(f"Batch size must be between 1 and 256 or 'auto' (got {self.batch_size}).")
        named = self.output.suffix.lower().lstrip(".") if self.output else ""
        if named in FORMATS and named != self.fmt:  # CSV was written into o.jsonl without a word
            raise InputError(f"The caption file {self.output.name} is named .{named} but the format is {self.fmt}; "
                             f"name it .{self.fmt}, or choose the {named} format.")
        if self.output is not None:  # "is a folder", "not a caption CSV": said before the model loads, not after
            open_captions(self.fmt, self.output, self.overwrite)


@dataclass(frozen=True)
class CaptionProgress:
    """Where a batch run stands."""

    done: int
    total: int
    images_per_s: float
    eta_s: float | None

    def line(self) -> str:
        """'12/40 · 5.1 images/s · ETA 6 s' for a progress bar."""
        eta = f" · ETA {self.eta_s:.0f} s" if self.eta_s is not None else ""
        return f"{self.done}/{self.total} · {self.images_per_s:.1f} images/s{eta}"


@dataclass
class CaptionSummary:
    """What a batch run did: captioned, skipped and failed images (with the reason for each)."""

    total: int = 0
    captioned: list[tuple[str, str]] = field(default_factory=list)  # (image, caption)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (image, reason)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (image, reason)
    cancelled: bool = False
    stopped: str = ""  # why the run stopped before the end (an endpoint that refuses every request)
    output: Path | None = None
    batch_size: int = 1
    batch_reason: str = ""
    elapsed_s: float = 0.0
    generated: int = 0  # images that went through the model

    @property
    def done(self) -> int:
        """Images handled so far, whatever the outcome."""
        return len(self.captioned) + len(self.skipped) + len(self.failed)

    @property
    def images_per_s(self) -> float:
        """Throughput of the model part of the run."""
        return self.generated / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def line(self) -> str:
        """One line for the terminal and the UI."""
        rate = f"{self.images_per_s:.1f} images/s; " if self.captioned else ""  # no speed for a run where none worked
        text = (f"{len(self.captioned)} captioned, {len(self.skipped)} skipped, {len(self.failed)} failed "
                f"of {self.total} in {self.elapsed_s:.1f} s ({rate}{self.batch_reason})")
        left = f" with {self.total - self.done} not done" if self.total > self.done else ""  # "with 0 not done"
        if self.cancelled:
            text += f"; cancelled{left}"
        if self.stopped:
            text += f"; stopped{left}: {self.stopped.rstrip('.')}"
        return text + (f"; captions in {self.output}" if self.output and self.output.exists() else "")

    def rows(self, base: Path | None = None) -> list[list[str]]:
        """[image, status, caption or reason] for a summary table; failures first. `base`: images inside it are
        named from it (a batch of uploads was named by its full path in the app's outputs, the reasons pushed off)."""
        def name(image: str) -> str:
            inside = base is not None and Path(image).is_relative_to(base)
            named = Path(image).relative_to(base).as_posix() if inside else image
            shown = shown_name(named)
            return shown if shown == named else f"{shown} (name not UTF-8: its bytes written as \\xNN)"

        return ([[name(image), "failed", shown_name(reason)] for image, reason in self.failed]
                + [[name(image), "skipped", shown_name(reason)] for image, reason in self.skipped]
                + [[name(image), "captioned", caption] for image, caption in self.captioned])


def caption_prompt(prompt: str, settings: Settings) -> str:
    """The question to ask: `prompt`, or the configured default when it is empty."""
    return prompt.strip() or settings.caption.prompt


def caption_conversation(image: Image.Image, prompt: str, start: str = "") -> list[dict]:
    """A one-turn chat asking `prompt` about `image`; a non-empty `start` begins the answer."""
    messages = [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": prompt}]}]
    if start.strip():
        messages.append({"role": "assistant", "content": [{"type": "text", "text": start.strip()}]})
    return messages


def not_continued(start: str, answer: str) -> str:
    """Why a forced `start` the model wrote nothing after is no caption ('' when it wrote some): the start alone was
    saved as the caption and counted as captioned."""
    if start.strip() and not answer.strip():
        return f"the model wrote nothing after the start '{start.strip()}' (it does not continue it): try another start"
    return ""


def with_start(start: str, answer: str) -> str:
    """The caption: the forced start followed by what the model wrote after it."""
    start, answer = start.strip(), answer.strip()
    if not start or not answer:
        return start or answer
    return start + ("" if answer[0] in ",.;:!?)'" else " ") + answer


def _params(settings: Settings) -> GenerationParams:
    gen = settings.generation
    return GenerationParams(gen.max_new_tokens, gen.temperature, gen.top_p, gen.seed)


def caption_image(manager: ModelManager, source: ImageSource, prompt: str = "", start: str = "",
                  adapter: str | None = None, max_bytes: int | None = None) -> str:
    """The caption of one image (path, bytes or PIL image), or InputError saying what is wrong."""
    image = load_image(source, max_bytes=max_bytes)
    conversation = caption_conversation(image, caption_prompt(prompt, manager.settings), start)
    adapter = None if is_base(adapter) else adapter
    answer = manager.generate_batch([conversation], _params(manager.settings), adapter=adapter)[0]
    if stalled := not_continued(start, answer):
        raise InputError(stalled[0].upper() + stalled[1:] + ".")
    caption = with_start(start, answer)
    if not caption:
        raise InputError(EMPTY_CAPTION[0].upper() + EMPTY_CAPTION[1:] + ".")
    return caption


def choose_batch_size(setting: int | str, manager: ModelManager, adapter: str | None = None) -> tuple[int, str]:
    """(images per batch, why): a number as given, or for 'auto' one that fits the device; for an endpoint
    the batch is the requests in flight, at most its max_concurrency."""
    if is_endpoint(adapter):
        limit = manager.endpoint(adapter).entry.max_concurrency
        size = limit if setting == "auto" else min(int(setting), limit)
        return size, f"up to {size} request{'s' if size != 1 else ''} in flight to {adapter} (max_concurrency {limit})"
    if setting != "auto":
        size = int(setting)
        if not 1 <= size <= 256:
            raise InputError(f"Batch size must be between 1 and 256 or 'auto' (got {setting}).")
        return size, f"batch size {size} as chosen"
    device = manager.info.device if manager.info else "cpu"
    if device.startswith("cuda"):
        import torch

        free_gib = torch.cuda.mem_get_info()[0] / 2**30
        size = 16 if free_gib >= 24 else 8 if free_gib >= 8 else 4
        return size, f"auto batch size {size}: {free_gib:.0f} GiB free on the GPU"
    return 8, f"auto batch size 8 on {device}"


def _pixels(path: Path) -> int:
    """Width x height from the file header (no decoding); 0 when unreadable (it fails later, with a reason)."""
    try:
        with warnings.catch_warnings():  # a picture over Pillow's limit is reported when it is decoded, not printed raw
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                return image.width * image.height
    except Exception:  # noqa: BLE001 - any unreadable file is reported when it is decoded
        return 0


def _decode(batch: list[Path], max_bytes: int | None) -> tuple[list[tuple[Path, Image.Image]], list[tuple[str, str]]]:
    """(the batch's pictures decoded, (path, why) of those that could not be)."""
    decoded, failed = [], []
    for path in batch:
        try:
            decoded.append((path, load_image(path, max_bytes=max_bytes)))
        except InputError as exc:
            failed.append((str(path), str(exc)))
        except OSError as exc:
            failed.append((str(path), f"'{path.name}' could not be read ({exc.strerror or exc}); check its permissions."))
    return decoded, failed


def _store(store, path: Path, caption: str, summary: CaptionSummary) -> None:
    if not caption:
        summary.failed.append((str(path), EMPTY_CAPTION))
        return
    try:
        written = store.put(path, caption)
    except OSError as exc:
        summary.failed.append((str(path), f"its caption could not be written ({exc.strerror or exc}); "
                                          "check that the folder is writable."))
        return
    if written:
        summary.captioned.append((str(path), caption))
    else:
        summary.skipped.append((str(path), "a caption appeared while the batch ran; it was kept "
                                           "(use overwrite to replace it)"))


def _caption_batch(manager: ModelManager, decoded: list[tuple[Path, Image.Image]], options: CaptionOptions,
                   prompt: str, store, summary: CaptionSummary) -> None:
    if not decoded:
        return
    conversations = [caption_conversation(image, prompt, options.start) for _, image in decoded]
    adapter = None if is_base(options.adapter) else options.adapter
    answers = manager.generate_each(conversations, _params(manager.settings), adapter)
    summary.generated += len(decoded)
    for (path, _), answer in zip(decoded, answers):
        if isinstance(answer, EndpointUnusable):  # every later request would fail alike
            summary.stopped = str(answer)
        if isinstance(answer, VlmchatError):
            summary.failed.append((str(path), str(answer)))
        elif stalled := not_continued(options.start, answer):
            summary.failed.append((str(path), stalled + "; nothing was written"))
        else:
            _store(store, path, options.prefix + with_start(options.start, answer) + options.suffix, summary)


def _pending(images: list[Path], store, overwrite: bool, summary: CaptionSummary) -> list[Path]:
    """Images still to caption; those with a caption are skipped, those sharing a caption file or whose caption
    cannot be written fail (before any is captioned)."""
    owners: dict[str, Path] = {}
    todo = []
    for path in images:
        key = store.key(path)
        if key in owners:
            summary.failed.append((str(path), f"its caption would share {Path(key).name} with "
                                              f"{owners[key].name}; rename one of them"))
            continue
        owners[key] = path
        try:
            carried = not overwrite and not store.has(path) and store.carry(path)
        except InputError as exc:  # its caption file cannot be carried as it is
            summary.failed.append((str(path), str(exc)))
            continue
        if not overwrite and store.has(path):
            summary.skipped.append((str(path), "already has a caption (use overwrite to replace it)"))
        elif carried:
            summary.skipped.append((str(path), f"its caption {caption_path(path).name} was copied into the file "
                                               "(use overwrite to caption it anew)"))
        elif why := store.unwritable(path):
            summary.failed.append((str(path), why))
        else:
            todo.append(path)
    return sorted(todo, key=lambda p: (_pixels(p), str(p)))


ProgressCallback = Callable[[CaptionProgress], None]


def _report(progress: ProgressCallback | None, summary: CaptionSummary, started: float) -> None:
    summary.elapsed_s = time.monotonic() - started
    if progress is None:
        return
    rate = summary.images_per_s
    left = summary.total - summary.done
    progress(CaptionProgress(summary.done, summary.total, rate, left / rate if rate > 0 else None))


def caption_images(manager: ModelManager, images: list[Path], options: CaptionOptions = CaptionOptions(),
                   progress: ProgressCallback | None = None, cancel: threading.Event | None = None,
                   failed: list[tuple[str, str]] = ()) -> CaptionSummary:
    """Caption `images` in batches and store the captions; `failed` adds problems found while scanning."""
    options.check()
    size, reason = choose_batch_size(options.batch_size, manager, options.adapter)
    store = open_captions(options.fmt, options.output, options.overwrite)
    summary = CaptionSummary(total=len(images) + len(failed), failed=list(failed), batch_size=size,
                             batch_reason=reason, output=store.output)
    prompt = caption_prompt(options.prompt, manager.settings)
    started = time.monotonic()
    todo = _pending(images, store, options.overwrite, summary)
    _report(progress, summary, started)
    batches = [todo[first:first + size] for first in range(0, len(todo), size)]
    # The next batch is decoded while this one is generated (bad files drop out there, the rest go on).
    reader = ThreadPoolExecutor(1, thread_name_prefix="vlmchat-caption-reader")
    upcoming = reader.submit(_decode, batches[0], options.max_bytes) if batches else None
    try:
        for index in range(len(batches)):
            if cancel is not None and cancel.is_set():
                summary.cancelled = True
                break
            if summary.stopped:
                break
            decoded, unreadable = upcoming.result()
            if index + 1 < len(batches):
                upcoming = reader.submit(_decode, batches[index + 1], options.max_bytes)
            summary.failed.extend(unreadable)
            _caption_batch(manager, decoded, options, prompt, store, summary)
            _report(progress, summary, started)
    finally:
        reader.shutdown(cancel_futures=True)
        store.close()
        summary.elapsed_s = time.monotonic() - started
    return summary


def default_table_output(paths: list[str | Path], fmt: str, settings: Settings) -> Path:
    """Where a JSONL/CSV goes when no file is named: inside the one folder given, else in outputs/."""
    if len(paths) == 1 and Path(paths[0]).expanduser().is_dir():
        return Path(paths[0]).expanduser() / f"captions.{fmt}"
    return settings.paths.resolve("outputs") / f"captions.{fmt}"


def unpack_folder(settings: Settings) -> Path:
    """The folder zips are unpacked into (one subfolder per zip and its contents, so a second run resumes)."""
    return settings.paths.resolve("outputs") / "unpacked"


def load_caption_model(settings: Settings, adapter: str | None = None) -> ModelManager:
    """A manager with the configured model loaded and `adapter` (if any) attached; for an endpoint
    ("endpoint:NAME") nothing is loaded, the endpoint is only checked to be configured."""
    manager = ModelManager(settings)
    if is_endpoint(adapter):
        manager.endpoint(adapter)
        return manager
    manager.load()
    manager.attach_named_adapter(adapter)
    return manager
