"""One eval run: every model (base and adapters) on the same questions, in one pass over the data.

`run_eval` checks everything first (usable items, method, every adapter attached and made for the
loaded base), then for each batch of items decodes the pictures once and scores the batch with
each model in turn, switching adapters with `use_adapter` (never reloading the base). The
manager's lock is taken per batch, so Chat stays responsive. Cancel stops between batches and
keeps what is done. With loglik, what the models share is made once per batch (`score.BatchWork`).
Several methods (loglik and generate) can score the same questions in one run: each batch is
decoded once and scored by every model with every method, so their accuracy and time compare.
The result is written to `<outputs>/eval/<run-id>/` (see `report.py`).
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Callable

from ..errors import EndpointUnusable, InputError, NoModelError, VlmchatError
from ..images import load_image
from ..lora.runtime import BASE, is_base
from ..models.families import check_image_detail
from ..models.manager import ModelManager, is_endpoint
from .report import EvalResult
from .score import BatchWork, score_captions, score_generate, score_loglik
from .sets import CAPTION, EvalSet

__all__ = ["EvalOptions", "EvalResult", "METHODS", "run_eval", "eval_folder"]

METHODS = ("loglik", "generate")
Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class EvalOptions:
    """How to run an eval: batch size and the generation setting (for --method generate and captions)."""

    batch_size: int = 8
    max_new_tokens: int | None = None   # None: 16 for multiple choice, 64 for captions
    num_beams: int = 1                  # 1 = greedy; the write-up's setting is 5 beams, 1 new token
    limit: int | None = None            # recorded in the config; the reader applies it
    output: Path | None = None          # also write results.csv here
    image_detail: str = ""              # low / auto / high for the pictures; "" = generation.image_detail, as Chat

    def check(self) -> None:
        """Raise InputError naming the option that is out of range."""
        if not 1 <= int(self.batch_size) <= 256:
            raise InputError(f"batch size must be between 1 and 256 (got {self.batch_size}).")
        if self.max_new_tokens is not None and not 1 <= int(self.max_new_tokens) <= 1024:
            raise InputError(f"max new tokens must be between 1 and 1024 (got {self.max_new_tokens}).")
        if not 1 <= int(self.num_beams) <= 16:
            raise InputError(f"num beams must be between 1 and 16 (got {self.num_beams}).")
        check_image_detail(self.image_detail)


def eval_folder(settings, run_id: str | None = None) -> Path:
    """`<outputs>/eval/<run-id>/` for a new run (the id is the start time and a random suffix)."""
    run_id = run_id or f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
    return settings.paths.resolve("outputs") / "eval" / run_id


def check_models(manager: ModelManager, models: list[str]) -> list[str]:
    """The models to score, de-duplicated, each adapter attached (an "endpoint:NAME" checked to be configured);
    InputError before anything runs. Only local models need a loaded model."""
    names = []
    for name in models or []:
        name = BASE if is_base(name) else str(name).strip()
        if name not in names:
            names.append(name)
    if not names:
        raise InputError("Nothing to evaluate: name at least one adapter, or keep the base model.")
    if (manager.model is None or manager.info is None) and not all(is_endpoint(name) for name in names):
        raise NoModelError("No model is loaded; load one in the Model tab or start with --model.")
    for name in names:
        manager.attach_named_adapter(name)  # unknown or made for another base: InputError saying which
    return names


def check_methods(eval_set: EvalSet, method, models: list[str]) -> list[str]:
    """The methods the run uses (captions are generated), or InputError for one unknown or not fit for a model.

    `method`: a name, several joined by "," or "+", or a list of names. With loglik and generate both, an
    endpoint is scored by generate only."""
    if eval_set.kind == CAPTION:
        return ["caption"]  # captions are always generated; the metrics are in summary.json
    names = method.replace("+", ",").split(",") if isinstance(method, str) else list(method or [])
    methods = list(dict.fromkeys(str(name).strip().lower() for name in names if str(name).strip()))
    if not methods:
        raise InputError(f"No eval method is chosen; use one of {', '.join(METHODS)}, or both.")
    for name in methods:
        if name not in METHODS:
            raise InputError(f"Eval method '{name}' is not known; use one of {', '.join(METHODS)}, or both.")
    endpoints = [name for name in models if is_endpoint(name)]
    if methods == ["loglik"] and endpoints:
        raise InputError(f"{endpoints[0]} is an endpoint, and an OpenAI-compatible API does not return the "
                         "log-likelihood of given answers; evaluate it with --method generate (the Generate "
                         "method), which scores every model the same way.")
    return methods


def _scorer(method: str, options: EvalOptions, image_detail: str):
    """The scoring function; `image_detail`: the run's resolved detail, so every batch uses the one recorded."""
    if method == "loglik":
        return score_loglik
    if method == "generate":
        return partial(score_generate, max_new_tokens=options.max_new_tokens or 16, num_beams=options.num_beams,
                       image_detail=image_detail)
    return partial(score_captions, max_new_tokens=options.max_new_tokens or 64, num_beams=options.num_beams,
                   image_detail=image_detail)


def _decode(result: EvalResult, indices: range) -> list[tuple[int, list]]:
    """The batch's pictures, decoded once for every model; an unreadable picture skips its item."""
    decoded = []
    for index in indices:
        try:
            decoded.append((index, [load_image(path) for path in result.items[index].images]))
        except VlmchatError as exc:
            for name in result.models:
                result.skipped[name][index] = str(exc)
        except OSError as exc:
            for name in result.models:
                result.skipped[name][index] = f"a picture could not be read ({exc.strerror or exc})"
    return decoded


def _unfit(manager: ModelManager) -> Callable[[object], str | None]:
    """Why the loaded model cannot be asked an item as Chat and /v1 would refuse it (its recipe's flags), or None;
    the recipe is read once for the run, not per question."""
    from ..models.conversation import NEEDS_IMAGE_KEY, ONE_PICTURE_KEY, model_flag

    who = manager.info.shown if manager.info else "the model"
    one_picture, needs_image = model_flag(manager, ONE_PICTURE_KEY), model_flag(manager, NEEDS_IMAGE_KEY)

    def reason(item) -> str | None:
        if one_picture and len(item.images) > 1:
            return f"{who} reads one picture at a time and this question has {len(item.images)} (Chat refuses it too)"
        if needs_image and not item.images:
            return f"{who} answers only about a picture and this question has none (Chat refuses it too)"
        return None

    return reason


def _score(scorer, manager: ModelManager, result: EvalResult, name: str, decoded: list[tuple[int, list]]) -> None:
    """Score a batch with one row (a model, by one method); if the batch fails as a whole, each item is tried
    alone."""
    items = [result.items[index] for index, _ in decoded]
    try:
        scores = scorer(manager, items, [images for _, images in decoded], result.model_of(name))
    except (NoModelError, EndpointUnusable):  # every later batch would fail alike
        raise
    except VlmchatError as exc:
        if len(decoded) == 1:
            result.skipped[name][decoded[0][0]] = str(exc)
            return
        for one in decoded:
            _score(scorer, manager, result, name, [one])
        return
    unusable = None
    for (index, _), score in zip(decoded, scores):
        if isinstance(score, VlmchatError):  # this question alone failed (a generate answer, an endpoint's request)
            result.skipped[name][index] = str(score)
            unusable = unusable or (score if isinstance(score, EndpointUnusable) else None)
        else:
            result.scores[name][index] = score
    if unusable is not None:  # every later batch would fail alike
        raise unusable


def _report(progress: Progress | None, result: EvalResult, started: float) -> None:
    result.elapsed_s = time.monotonic() - started
    if progress is None:
        return
    total, done = len(result.items), result.done
    pace = done / result.elapsed_s if result.elapsed_s > 0 else 0.0
    eta = f" · ETA {(total - done) / pace:.0f} s" if pace > 0 and done < total and not result.cancelled else ""
    # the rate of questions scored: skipped ones cost nothing and read "284443.3 questions/s" (outside reviewer)
    scored = len(result.scored())
    rate = f"{scored / result.elapsed_s:.1f} questions/s" if scored and result.elapsed_s > 0 else "none scored yet"
    methods, models = len(result.methods()), len({result.model_of(row) for row in result.models})
    rows = f"{models} model(s) × {methods} methods" if methods > 1 else f"{models} model(s)"
    progress(done, total, f"{done}/{total} questions × {rows} · {rate}{eta}")


def _rows(names: list[str], methods: list[str]) -> dict[str, tuple[str, str]]:
    """{row: (model, method)}: a row per model, named by the model; per model and method ("base · loglik") when
    methods are compared (an endpoint has no loglik row)."""
    if len(methods) == 1:
        return {name: (name, methods[0]) for name in names}
    return {f"{name} · {method}": (name, method) for method in methods for name in names
            if not (method == "loglik" and is_endpoint(name))}


def run_eval(manager: ModelManager, eval_set: EvalSet, models: list[str] = (BASE,), method="loglik",
             options: EvalOptions = EvalOptions(), progress: Progress | None = None,
             cancel: threading.Event | None = None, folder: Path | None = None) -> EvalResult:
    """Score `models` ('base', adapter names, "endpoint:NAME"s) on `eval_set` by `method` (one, or several as
    `check_methods` reads them); results are written to `folder` (default: a new run folder)."""
    options.check()
    methods = check_methods(eval_set, method, list(models))
    eval_set.require_usable()
    names = check_models(manager, list(models))
    local = manager.model is not None and not all(is_endpoint(name) for name in names)
    detail = manager.detail(options.image_detail) if local else None  # the pictures' image detail
    config = {"data": str(eval_set.path), "settings": manager.settings.file,
              "model": manager.info.model_id if manager.info else None, "models": names,
              "method": "+".join(methods),
              **{k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(options).items()},
              # what was asked (None: settings' default) beside what the model sees (LLaVA: one size whatever is asked)
              "image_detail_asked": options.image_detail or None,
              "image_detail": detail.detail if detail else None, "image_detail_reason": detail.reason if detail else None}
    if methods == ["loglik"]:  # nothing is generated: a --num-beams 5 recorded read as if beams were used (tester)
        config.update(num_beams=None, max_new_tokens=None)
    entries = _rows(names, methods)
    result = EvalResult(eval_set=eval_set, models=list(entries), method="+".join(methods), config=config,
                        entries=entries if len(methods) > 1 else {})
    scorers = {name: _scorer(how, options, detail.detail if detail else options.image_detail)
               for name, (_, how) in entries.items()}
    unfit = _unfit(manager) if local else (lambda item: None)
    local_names = [name for name in entries if not is_endpoint(result.model_of(name))]
    sharing = sum(scorers[name] is score_loglik for name in local_names)
    size = int(options.batch_size)
    started = time.monotonic()
    _report(progress, result, started)
    scoring, stopped = list(entries), {}  # an endpoint that refuses every request is stopped; the others go on
    for first in range(0, len(result.items), size):
        if cancel is not None and cancel.is_set():
            result.cancelled = True
            break
        indices = range(first, min(first + size, len(result.items)))
        decoded = _decode(result, indices)
        for index, _ in decoded:
            reason = unfit(result.items[index])
            for name in local_names if reason else ():
                result.skipped[name][index] = reason
        work = BatchWork(detail, sharing)
        for name in list(scoring):
            asked = [one for one in decoded if one[0] not in result.skipped[name]]
            scorer = partial(score_loglik, work=work) if scorers[name] is score_loglik else scorers[name]
            try:
                if asked:
                    _score(scorer, manager, result, name, asked)
            except EndpointUnusable as exc:
                scoring.remove(name)
                stopped[name] = exc
        if not scoring:  # nothing left to score: with nothing scored the reason is the answer, else what was is kept
            if not any(result.scores.values()):
                raise next(iter(stopped.values()))
            break
        result.done = indices.stop
        _report(progress, result, started)
    if result.cancelled:  # the last line without its ETA
        _report(progress, result, started)
    for name, exc in stopped.items():  # its remaining questions, each with the reason (it scored none of them)
        result.stopped[name] = str(exc)
        for index in range(len(result.items)):
            if index not in result.scores[name]:
                result.skipped[name].setdefault(index, f"not asked: {exc}")
    result.write(folder or eval_folder(manager.settings), options.output)
    return result
