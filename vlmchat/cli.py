"""The command line: parses flags, applies them over settings.toml, runs the app or a headless task.

This is the only module that talks to the terminal; it turns a VlmchatError into one line on
stderr and exit code 2. Importing it stays cheap (no torch, no gradio) so `--help` is instant.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import VlmchatError
from .settings import Settings, load_settings

EXIT_USER_ERROR = 2
MODEL_COMMANDS = ("caption", "plan", "download", "handoff", "finetune", "eval")  # take --model after the command too
MODEL_HELP = ("hub id (owner/name), local folder, a name from the Model tab's list (e.g. smolvlm-256m, see "
              "settings.toml's [catalog.*]), or 'demo' (the embedded demo model); default: model.id in settings")


def _add_model_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help=MODEL_HELP)
    parser.add_argument("--quantization", choices=("auto", "none", "8bit", "4bit"),
                        help="weight quantization (default from settings.toml: model.quantization)")
    parser.add_argument("--settings", metavar="FILE", help="settings file to use instead of settings.toml")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for `python launch.py`."""
    parser = argparse.ArgumentParser(
        prog="python3 launch.py",
        description="vlmchat: chat with, caption with and fine-tune vision-language models locally. "
                    "With no command it starts the web UI on http://127.0.0.1:7860.",
    )
    _add_model_flags(parser)
    parser.add_argument("--host", help="address to bind (default 127.0.0.1; anything else requires a login)")
    parser.add_argument("--port", type=int, help="port to serve on (default 7860)")
    parser.add_argument("--share", action="store_true", default=None,
                        help="also make a temporary public link (requires a login)")
    parser.add_argument("--auth", metavar="USER:PASS", help="require this login to use the UI and API")
    parser.add_argument("--auth-file", metavar="FILE", help="require a login from FILE (one user:password a line)")
    parser.add_argument("--adapter", metavar="NAME", help="LoRA adapter (in adapters/) to activate at start")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    build = commands.add_parser("build-demo", help="rebuild the embedded demo model from code (CPU, minutes)")
    build.add_argument("--steps", type=int, default=None, help="training steps (default: the shipped recipe)")
    build.add_argument("--output", help="folder to write (default: models/vlmchat-demo)")
    test = commands.add_parser("test", help="install the test dependencies and run the test suite")
    test.add_argument("pytest_args", nargs=argparse.REMAINDER, help="extra arguments passed to pytest")
    _add_caption_command(commands)
    _add_model_commands(commands)
    handoff = commands.add_parser("handoff", help="print the vLLM / SGLang commands that serve this base model and "
                                                  "its adapters on bigger hardware, and check the adapters for vLLM")
    handoff.add_argument("--tensor-parallel", type=int, default=1, metavar="GPUS", help="GPUs per node (default 1)")
    handoff.add_argument("--nodes", type=int, default=1, metavar="N", help="machines (default 1)")
    handoff.add_argument("--port", type=int, default=8000, dest="vllm_port", help="port vLLM serves on (default 8000)")
    from .finetune.command import add_finetune_parser

    add_finetune_parser(commands)
    from .evaluate.command import add_eval_parser

    add_eval_parser(commands)
    for name, command in commands.choices.items():  # `launch.py eval --settings FILE ...` as well as before it
        if name != "test":
            command.add_argument("--settings", metavar="FILE", default=argparse.SUPPRESS,
                                 help="settings file to use instead of settings.toml")
        if name in MODEL_COMMANDS:
            command.add_argument("--model", default=argparse.SUPPRESS, help=MODEL_HELP)
    return parser


def _add_model_commands(commands) -> None:
    plan = commands.add_parser("plan", help="show which precision and placement a model gets here, and why")
    plan.add_argument("--quantization", choices=("auto", "none", "8bit", "4bit"), default=argparse.SUPPRESS,
                      help="policy to plan for (default: model.quantization in settings)")
    plan.add_argument("--vram-gib", type=float, metavar="X", help="plan for one GPU with X GiB free instead of "
                                                                  "the memory measured now")
    plan.add_argument("--context", type=int, default=4096, metavar="TOKENS", help="context budget (default 4096)")
    plan.add_argument("--images", type=int, default=1, metavar="N", help="images per prompt (default 1)")
    plan.add_argument("--json", action="store_true", help="print the plan as JSON")
    download = commands.add_parser("download", help="download a hub model's files (checks access first)")
    download.add_argument("model_id", metavar="MODEL_ID", nargs="?", help="hub id (owner/name) or catalog key "
                                                                           "(or give it as --model MODEL_ID)")
    download.add_argument("--revision", help="branch, tag or commit (default: main)")
    download.add_argument("--ask-token", action="store_true",
                          help="read a Hugging Face token from the terminal (not echoed) instead of HF_TOKEN / "
                               "`hf auth login`")
    download.add_argument("--remember", action="store_true",
                          help="save that token with huggingface_hub's login, as `hf auth login` does")


def run_plan(args: argparse.Namespace, settings: Settings) -> int:
    """`launch.py plan`: print the plan and its reason; exit code 1 when nothing fits."""
    import json

    from .errors import SettingsError
    from .models.decide import decide_load
    from .models.resolve import resolve_model

    if args.vram_gib is not None and not 0 < args.vram_gib <= 4096:
        raise SettingsError(f"--vram-gib must be more than 0 and at most 4096 GiB (got {args.vram_gib}).")
    if not 1 <= args.context <= 10_000_000 or not 0 <= args.images <= 1000:
        raise SettingsError("--context must be at least 1 token and --images between 0 and 1000.")
    decision = decide_load(resolve_model(settings.model.id, settings), settings, vram_gib=args.vram_gib,
                           context_tokens=args.context, images=args.images)
    plan, size = decision.plan, decision.size
    if args.json:
        print(json.dumps(decision.to_dict(), indent=2))
        return 0 if plan.ok else 1
    print(decision.summary())
    count = (lambda b: f"{b:.2f} B" if b >= 0.1 else f"{b * 1000:.2f} M")  # noqa: E731
    print(f"  sizes: {count(size.language_b)} language + {count(size.vision_b)} vision parameters ({size.source})")
    if plan.ok:
        print(f"  dtype {plan.dtype}, {plan.quantization}, device_map {plan.device_map}, "
              f"~{plan.estimate_gib:.1f} GiB of {plan.free_gib:.1f} GiB free")
        if plan.unquantized:
            print(f"  left unquantized: {', '.join(plan.unquantized)}")
    print("  options: " + ", ".join(f"{label} ~{need:.1f} GiB" for label, need in plan.alternatives))
    return 0 if plan.ok else 1


def stop_as_ctrl_c() -> None:
    """From now on SIGTERM and SIGHUP (`timeout`, `docker stop`, a closed terminal; Windows has no SIGHUP) stop this
    process as Ctrl-C does, with a KeyboardInterrupt: what Ctrl-C says and tidies up is done for them too."""
    import signal

    for name in ("SIGTERM", "SIGHUP"):
        # a signal set aside (SIGHUP under nohup: the app must outlive the terminal) stays so
        if hasattr(signal, name) and signal.getsignal(getattr(signal, name)) is signal.SIG_DFL:
            signal.signal(getattr(signal, name), _interrupt)


def _interrupt(signum, frame):
    _interrupt.signum = signum
    raise KeyboardInterrupt


def interrupted_exit_code() -> int:
    """The exit code of a process stopped by a signal: 130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP."""
    return 128 + getattr(_interrupt, "signum", 2)


def _read_token() -> str:
    """A token typed by the user (not echoed on a terminal), or one line of stdin."""
    if sys.stdin.isatty():
        import getpass

        return getpass.getpass("Hugging Face token (not shown): ").strip()
    return sys.stdin.readline().strip()


def run_download(args: argparse.Namespace, settings: Settings) -> int:
    """`launch.py download`: check access, print what will be fetched, download with a progress bar.

    Ctrl-C stops it with one line and exit code 130 (the download threads end at their next chunk).
    """
    from .errors import InputError
    from .hub import download_model
    from .models.resolve import hub_id

    model_id = args.model_id or args.model  # `download ID`, `download --model ID` or `--model ID download`
    if not model_id or args.model not in (None, model_id):
        raise InputError("Name one model to download: launch.py download OWNER/NAME (a hub id or a catalog key).")
    repo_id = hub_id(model_id, settings)  # a catalog key, a model page's address, or "did you mean ...?"
    token = _read_token() if args.ask_token else None
    bar = None

    def progress(fraction: float, text: str) -> None:
        nonlocal bar
        if bar is None:  # made once there is something to download: an offline run prints no empty bar
            from tqdm import tqdm

            bar = tqdm(total=100, unit="%", file=sys.stderr, bar_format="{l_bar}{bar}|")
        bar.set_description_str(text, refresh=False)
        bar.update(round(fraction * 100) - bar.n)

    try:
        try:
            result = download_model(repo_id, args.revision, token, progress=progress, remember=args.remember,
                                    on_plan=lambda plan: print(plan.describe(), flush=True))
        finally:  # closed before any message, so the error is the last line printed
            if bar is not None:
                bar.close()
    except KeyboardInterrupt:
        print(f"vlmchat: stopped downloading {repo_id}; the files finished so far are kept, and running the same "
              "command again downloads the rest.", file=sys.stderr)
        return 130
    print(result.message)
    return 0


def _batch_size(value: str) -> int | str:
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be 'auto' or a whole number (got {value!r})") from None


def _add_caption_command(commands) -> None:
    caption = commands.add_parser("caption", help="caption images, folders or zips (a .txt beside each image, "
                                                  "or one JSONL/CSV file)")
    caption.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders or .zip files")
    caption.add_argument("--prompt", help="the question asked about each image (default: caption.prompt in settings)")
    caption.add_argument("--start", metavar="TEXT", help='force how every caption starts, e.g. "A photo of"')
    caption.add_argument("--prefix", metavar="TEXT", default="",
                         help='written before every caption as it is, e.g. a trigger word: --prefix "ohwx, "')
    caption.add_argument("--suffix", metavar="TEXT", default="", help="written after every caption as it is")
    caption.add_argument("--adapter", metavar="NAME", default=argparse.SUPPRESS,
                         help="caption with this LoRA adapter from adapters/, 'base' for none (default: model.adapter "
                              "in settings, else the base model)")
    caption.add_argument("--format", choices=("txt", "jsonl", "csv"), help="txt: a .txt beside each image "
                         "(kohya/TagGUI layout); jsonl/csv: one file (default: caption.format in settings)")
    caption.add_argument("--output", metavar="FILE", help="the JSONL/CSV file (default: captions.FORMAT in the "
                         "folder given, else in outputs/); a .jsonl or .csv name sets the format when --format is "
                         "not given, and one that disagrees with --format is refused")
    caption.add_argument("--overwrite", action="store_true", help="replace captions that already exist")
    caption.add_argument("--batch-size", type=_batch_size, metavar="N", help='images per batch, or "auto"')
    caption.add_argument("--recursive", action="store_true", help="also caption images in subfolders")
    caption.add_argument("--endpoint", metavar="NAME", help="caption through the OpenAI-compatible server "
                         "[endpoints.NAME] in settings instead of a local model (--batch-size = requests in "
                         "flight, default its max_concurrency)")


def caption_choice(args: argparse.Namespace, settings: Settings) -> str | None:
    """The model choice of `caption`: "endpoint:NAME" for --endpoint NAME, else the adapter of settings' model.adapter
    (--adapter NAME sets it, before or after the command)."""
    from .errors import SettingsError
    from .models.answers import endpoint_choice

    endpoint = getattr(args, "endpoint", None)
    if endpoint and getattr(args, "adapter", None):
        raise SettingsError("--adapter is a local LoRA adapter and --endpoint a remote server; give one of them.")
    return endpoint_choice(endpoint) if endpoint else settings.model.adapter or None


def run_caption(args: argparse.Namespace, settings: Settings) -> int:
    """`launch.py caption`: 0 when every image was captioned or skipped, 1 when some failed."""
    from tqdm import tqdm

    from .caption.run import (CaptionOptions, caption_images, default_table_output, find_images,
                             load_caption_model, unpack_folder)

    named = Path(args.output).suffix.lower().lstrip(".") if args.output else ""  # --output x.csv: csv
    settings = settings.override("caption", batch_size=args.batch_size,
                                 format=args.format or (named if named in ("jsonl", "csv") else None))
    fmt = settings.caption.format
    output = Path(args.output) if args.output else None
    if output is None and fmt != "txt":
        output = default_table_output(args.paths, fmt, settings)
    choice = caption_choice(args, settings)
    options = CaptionOptions(prompt=args.prompt or "", start=args.start or "", prefix=args.prefix,
                             suffix=args.suffix, adapter=choice, fmt=fmt,
                             output=output, overwrite=args.overwrite, batch_size=settings.caption.batch_size)
    options.check()  # a mistake is reported before the model is loaded
    found = find_images(args.paths, recursive=args.recursive, unpack_to=unpack_folder(settings))
    manager = load_caption_model(settings, choice)
    done = [0]
    with tqdm(total=len(found.images) + len(found.failed), unit="image", file=sys.stderr) as bar:
        def progress(where) -> None:
            done[0] = where.done
            bar.update(where.done - bar.n)

        try:
            summary = caption_images(manager, found.images, options, failed=found.failed, progress=progress)
        except KeyboardInterrupt:
            print(f"\nvlmchat: interrupted with {done[0]} images done (each caption written whole); run the same "
                  "command again to caption the rest.", file=sys.stderr)
            return 130
    for image, reason in summary.failed:
        print(f"failed: {image}: {reason}", file=sys.stderr)
    print(summary.line())
    unpacked = unpack_folder(settings)
    if fmt == "txt" and any(Path(image).resolve().is_relative_to(unpacked.resolve()) for image in found.images):
        print(f"the .txt captions of the zips' images are beside them in {unpacked}")
    return 1 if summary.failed else 0


def apply_flags(args: argparse.Namespace) -> Settings:
    """settings.toml (or --settings FILE) with the command-line flags applied over it."""
    settings = load_settings(args.settings)
    settings = settings.override("model", id=args.model, quantization=args.quantization,
                                 adapter=getattr(args, "adapter", None))
    return settings.override("server", host=getattr(args, "host", None), port=getattr(args, "port", None),
                             share=getattr(args, "share", None), auth=getattr(args, "auth", None))


def run(args: argparse.Namespace) -> int:
    """Run the parsed command; returns the exit code."""
    if args.command == "test":
        import subprocess

        root = Path(__file__).resolve().parent.parent
        return subprocess.call([sys.executable, "-m", "pytest", *args.pytest_args], cwd=root)
    settings = apply_flags(args)
    if args.command == "caption":
        return run_caption(args, settings)
    if args.command == "handoff":
        from .api.handoff import handoff_text

        print(handoff_text(settings, args.tensor_parallel, args.nodes, args.vllm_port))
        return 0
    if args.command == "plan":
        return run_plan(args, settings)
    if args.command == "download":
        return run_download(args, settings)
    if args.command == "finetune":
        from .finetune.command import run_finetune

        return run_finetune(args, settings)
    if args.command == "eval":
        from .evaluate.command import run_eval_command

        return run_eval_command(args, settings)
    if args.command == "build-demo":
        from .demo.build import build_demo

        build_demo(settings, steps=args.steps, output=args.output)
        return 0
    from .ui.server import serve

    return serve(settings, auth_file=args.auth_file)


def _quiet_library_noise() -> None:
    """Hide warnings users can do nothing about (an optional bitsandbytes CPU kernel, a peft deprecation, a prompt
    over the tokenizer's length that vlmchat refuses with its own message)."""
    import logging
    import warnings

    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    # "...will result in indexing errors": vlmchat refuses such a prompt itself, saying how long it is
    logging.getLogger("transformers.tokenization_utils_base").addFilter(
        lambda record: not record.getMessage().startswith("Token indices sequence length"))
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


def _parse(argv: list[str]):
    """Parsed arguments; everything after the `test` command goes to pytest as is (argparse would take `-k` itself)."""
    parser = build_parser()
    valued = {a for action in parser._actions if action.option_strings and action.nargs != 0
              for a in action.option_strings}
    for index, word in enumerate(argv):
        if word == "test" and (index == 0 or argv[index - 1] not in valued):
            args = parser.parse_args(argv[:index + 1])
            args.pytest_args = argv[index + 1:]
            return args
        if not word.startswith("-") and (index == 0 or argv[index - 1] not in valued):
            break  # another command
        if word.startswith("--") and (index == 0 or argv[index - 1] not in valued):
            _refuse_unknown(parser, word)
    return parser.parse_args(argv)


def _refuse_unknown(parser: argparse.ArgumentParser, word: str) -> None:
    """An unknown option before the command, named as such: `--prot 7942` was "invalid choice: '7942'" for COMMAND
    (argparse reads the value as the command before it reports the option)."""
    import difflib

    name = word.split("=", 1)[0]
    options = [option for option in parser._option_string_actions if option.startswith("--")]
    if not any(option.startswith(name) for option in options):  # argparse takes an unambiguous start as the option
        close = difflib.get_close_matches(name, options, n=1)
        parser.error(f"unrecognized argument: {word}" + (f" (did you mean {close[0]}?)" if close else ""))


def main(argv: list[str] | None = None, bootstrap: bool = True) -> int:
    """Entry point: parse, install on first use, run; user mistakes become one line and exit code 2."""
    args = _parse(sys.argv[1:] if argv is None else list(argv))
    _quiet_library_noise()
    try:
        load_settings(args.settings)  # a broken settings file is reported before anything is installed
        if bootstrap:
            from .bootstrap import ensure_installed

            ensure_installed(dev=args.command == "test")
        return run(args)
    except VlmchatError as exc:
        print(f"vlmchat: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM / SIGHUP where stop_as_ctrl_c is on (the app while it starts)
        return interrupted_exit_code()
