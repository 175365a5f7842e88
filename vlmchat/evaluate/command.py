"""`python launch.py eval --data FILE_OR_FOLDER [--adapter NAME ...]`: did the adapter help? From the terminal.

Prints progress with an ETA to stderr, then the table, the verdicts and where the files are.
Exit codes: 0 every row scored, 1 some rows skipped (listed), 2 a user error (one line, from
cli.py), 130 interrupted (Ctrl-C stops after the current batch; what is done is written).
"""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path

from ..errors import InputError

EXIT_SKIPPED = 1
EXIT_INTERRUPTED = 130


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more (got {value})")
    return number


def add_eval_parser(commands) -> None:
    """Register the `eval` subcommand and its flags."""
    parser = commands.add_parser("eval", help="score the base model and adapters on your questions "
                                              "(accuracy, 95%% interval, McNemar verdict)")
    parser.add_argument("--data", required=True, metavar="FILE_OR_FOLDER",
                        help="eval set: multiple-choice rows (JSONL/JSON/CSV/Parquet, MMLU, MMMU) or captions; "
                             "a .zip of it with its images is unpacked into outputs/finetune/uploads/")
    parser.add_argument("--adapter", dest="adapters", action="extend", nargs="+", default=[], metavar="NAME",
                        help="adapter(s) from adapters/ to score beside the base (repeat or list several)")
    parser.add_argument("--endpoint", dest="endpoints", action="extend", nargs="+", default=[], metavar="NAME",
                        help="OpenAI-compatible server(s) from [endpoints.NAME] in settings to score too "
                             "(needs --method generate; with --no-base and no adapter no local model is loaded)")
    parser.add_argument("--no-base", action="store_true", help="do not score the base model")
    parser.add_argument("--method", dest="methods", choices=("loglik", "generate"), action="extend", nargs="+",
                        metavar="{loglik,generate}",
                        help="loglik: score each option's log-likelihood (default, no sampling); generate: parse a "
                             "generated answer; both (--method loglik generate): each model by both on the same "
                             "questions, compared in accuracy and speed. Caption sets are always generated.")
    parser.add_argument("--limit", type=_positive, metavar="N",
                        help="use only N items: each subject's first ones in turn, so a quick run covers every "
                             "subject (a set without subjects: the first N in file order)")
    parser.add_argument("--batch-size", type=_positive, default=8, metavar="N", help="questions per batch (default 8)")
    parser.add_argument("--max-new-tokens", type=_positive, metavar="N",
                        help="generate/captions: tokens per answer (default 16 for questions, 64 for captions)")
    parser.add_argument("--num-beams", type=_positive, default=1, metavar="N",
                        help="generate/captions: beam search width (default 1 = greedy)")
    from ..models.families import IMAGE_DETAILS

    parser.add_argument("--image-detail", choices=IMAGE_DETAILS,
                        help="image tokens per picture, as in Chat (auto: low on the CPU, high on a GPU with room; "
                             "default: [generation] image_detail in settings.toml)")
    parser.add_argument("--output", metavar="FILE.csv", help="also write results.csv here")


def _models(args: argparse.Namespace) -> list[str]:
    from ..models.answers import endpoint_choice

    endpoints = [endpoint_choice(name) for name in args.endpoints]
    models = ([] if args.no_base else ["base"]) + list(args.adapters) + endpoints
    if not models:
        raise InputError("--no-base needs at least one --adapter NAME or --endpoint NAME to evaluate.")
    return models


class _Progress:
    """Progress lines with an ETA on stderr: a tqdm bar on a terminal, plain lines otherwise."""

    def __init__(self):
        self.bar = None

    def __call__(self, done: int, total: int, text: str) -> None:
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="question", file=sys.stderr, dynamic_ncols=True,
                            disable=None if sys.stderr.isatty() else True)
        self.bar.update(done - self.bar.n)
        if self.bar.disable:
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _run_in_thread(run) -> tuple[object, bool]:
    """Run `run(cancel)` in a worker; Ctrl-C sets cancel and waits for the batch to finish."""
    cancel, finished, box = threading.Event(), threading.Event(), {}

    def work() -> None:
        try:
            box["result"] = run(cancel)
        except BaseException as exc:  # re-raised in the main thread
            box["error"] = exc
        finally:
            finished.set()

    worker = threading.Thread(target=work, name="vlmchat-eval", daemon=True)
    worker.start()
    interrupted = False
    # An Event, not worker.is_alive(): a Ctrl-C inside Thread.join() can leave the thread marked stopped while it
    # still scores (CPython 3.11), and the results were then lost in a traceback (outside reviewer)
    while not finished.is_set():
        try:
            finished.wait(0.2)
        except KeyboardInterrupt:
            if not interrupted:
                print("\nstopping after the current batch (what is done is kept)…", file=sys.stderr)
            interrupted = True
            cancel.set()
    if "error" in box:
        raise box["error"]
    return box["result"], interrupted


def print_result(result) -> None:
    """The table, the per-subject table, the verdicts, the problems and where the files are."""
    header = result.table_headers()
    rows = [header] + [["" if v is None else str(v) for v in row] for row in result.table()]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    if result.subject_table():
        print("\nper subject:")
        for subject, name, n, accuracy in result.subject_table():
            print(f"  {subject}  {name}: {accuracy}% of {n}" if n else f"  {subject}  {name}: none scored")
    print(f"\nmetric: {result.metric_reason()}")
    for sentence, _ in result.verdicts():
        print(sentence)
    for step in result.next_steps():
        print(f"next: {step}")
    for problem in result.problems()[:20]:
        print(f"skipped: {problem}", file=sys.stderr)
    if len(result.problems()) > 20:
        print(f"skipped: … and {len(result.problems()) - 20} more (all in summary.json)", file=sys.stderr)
    for name, why in result.stopped.items():
        print(f"stopped: {name}, the other models went on: {why}", file=sys.stderr)
    if result.cancelled:
        print(f"cancelled after {result.done} of {len(result.items)} questions", file=sys.stderr)
    print(f"files: {result.folder} (results.csv, summary.json, chart.png)")


def spare_the_set(output: Path, eval_set) -> None:
    """InputError when `output` is one of the set's own files (its data file, a picture of a question, a file in its
    folder): the results were written over it (a picture, the set itself) without a word."""
    target, root = output.expanduser().resolve(), Path(eval_set.path).expanduser().resolve()
    pictures = {Path(image).resolve() for item in eval_set.items for image in item.images}
    if target == root or target in pictures or (root.is_dir() and target.is_relative_to(root) and target.exists()):
        raise InputError(f"--output {output} is one of the eval set's own files, and the results would be written "
                         "over it; give a file of its own (e.g. results.csv beside the set).")


def _local_model(settings) -> tuple[str, str, str] | None:
    """(model id, folder, architecture) of the model the run will load, read without loading it; None when it is not
    on this machine yet (the load says what is wrong with it)."""
    from ..errors import VlmchatError
    from ..models.resolve import read_config, resolve_model

    try:
        source = resolve_model(None, settings)
        if source.path is None:
            return None
        return source.model_id, str(source.path), (read_config(source.path).get("architectures") or [""])[0]
    except VlmchatError:
        return None


def _refuse_textless(eval_set, models: list[str], local: tuple[str, str, str] | None) -> None:
    """InputError, before the load, when the local model answers only about a picture and no question has one (the
    model loaded, then skipped every row)."""
    from ..finetune.recipe import read_recipe
    from ..models.conversation import NEEDS_IMAGE_KEY
    from ..models.manager import is_endpoint

    if (local is None or any(is_endpoint(name) for name in models) or any(item.images for item in eval_set.items)
            or not read_recipe(local[1]).get(NEEDS_IMAGE_KEY)):  # an endpoint beside it is still scored
        return
    raise InputError(f"{local[0]} answers only about a picture and no question in {eval_set.path} has one: give the "
                     "questions pictures (an 'image' column), or evaluate another model (--model).")


def run_eval_command(args: argparse.Namespace, settings) -> int:
    """Read the set, load the model, score every model, print the result; returns the exit code."""
    from ..files import check_writable_file
    from ..finetune.uploads import unpacked_zip
    from ..lora.runtime import is_base
    from ..lora.store import find_adapter, usable_adapter
    from ..models.manager import ModelManager, is_endpoint
    from .run import EvalOptions, check_methods, run_eval
    from .sets import read_eval_set

    models = _models(args)
    options = EvalOptions(batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, num_beams=args.num_beams,
                          limit=args.limit, output=Path(args.output) if args.output else None,
                          image_detail=args.image_detail or "")
    options.check()
    if options.output is not None:  # before the model loads
        check_writable_file(options.output, "results.csv")
    adapters = [name for name in models if not (is_base(name) or is_endpoint(name))]
    local = _local_model(settings) if adapters else None
    for name in adapters:  # a mistyped adapter, or one for another model, is said before the model loads
        if local is None:
            find_adapter(settings.paths.resolve("adapters"), name)
        else:
            usable_adapter(settings.paths.resolve("adapters"), name, *local)
    manager = ModelManager(settings)
    # a mistyped endpoint too (it was refused as "an endpoint" by loglik's check, or after the load)
    for name in models:
        if is_endpoint(name):
            manager.endpoint(name)
    eval_set = read_eval_set(unpacked_zip(args.data, settings), limit=args.limit)
    eval_set.require_usable()  # a file with nothing usable is reported before the model loads
    check_methods(eval_set, args.methods or ["loglik"], models)  # so is a method an endpoint cannot be scored by
    _refuse_textless(eval_set, models, local or _local_model(settings))
    if options.output is not None:
        spare_the_set(options.output, eval_set)
    print(f"{eval_set.path}: {eval_set.format}, {len(eval_set.items)} usable, {len(eval_set.problems)} skipped",
          file=sys.stderr)
    if not all(is_endpoint(name) for name in models):  # endpoints alone need no local model
        print(f"model: {manager.load().summary()}", file=sys.stderr)
    progress = _Progress()
    try:
        result, interrupted = _run_in_thread(
            lambda cancel: run_eval(manager, eval_set, models, args.methods or ["loglik"], options, progress=progress,
                                    cancel=cancel))
    finally:
        progress.close()
    print_result(result)
    if options.output is not None:
        print(f"results.csv also written to {options.output}")
    if interrupted:
        return EXIT_INTERRUPTED
    if result.nothing_scored():  # a set of 0 usable rows for these models
        raise InputError(result.nothing_scored())
    return EXIT_SKIPPED if result.problems() else 0
