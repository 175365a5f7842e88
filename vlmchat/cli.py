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


def _add_model_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="hub id (owner/name), local folder, or 'demo' (the embedded demo model)")
    parser.add_argument("--quantization", choices=("auto", "none", "8bit", "4bit"),
                        help="weight quantization (default from settings.toml: model.quantization)")
    parser.add_argument("--settings", metavar="FILE", help="settings file to use instead of settings.toml")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for `python launch.py`."""
    parser = argparse.ArgumentParser(
        prog="python launch.py",
        description="vlmchat: chat with, caption with and fine-tune vision-language models locally. "
                    "With no command it starts the web UI on http://127.0.0.1:7860.",
    )
    _add_model_flags(parser)
    parser.add_argument("--host", help="address to bind (default 127.0.0.1; anything else requires a login)")
    parser.add_argument("--port", type=int, help="port to serve on (default 7860)")
    parser.add_argument("--share", action="store_true", default=None,
                        help="also make a temporary public link (requires a login)")
    parser.add_argument("--auth", metavar="USER:PASS", help="require this login to use the UI and API")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    build = commands.add_parser("build-demo", help="rebuild the embedded demo model from code (CPU, minutes)")
    build.add_argument("--steps", type=int, default=None, help="training steps (default: the shipped recipe)")
    build.add_argument("--output", help="folder to write (default: models/vlmchat-demo)")
    test = commands.add_parser("test", help="install the test dependencies and run the test suite")
    test.add_argument("pytest_args", nargs=argparse.REMAINDER, help="extra arguments passed to pytest")
    return parser


def apply_flags(args: argparse.Namespace) -> Settings:
    """settings.toml (or --settings FILE) with the command-line flags applied over it."""
    settings = load_settings(args.settings)
    settings = settings.override("model", id=args.model, quantization=args.quantization)
    return settings.override("server", host=getattr(args, "host", None), port=getattr(args, "port", None),
                             share=getattr(args, "share", None), auth=getattr(args, "auth", None))


def run(args: argparse.Namespace) -> int:
    """Run the parsed command; returns the exit code."""
    if args.command == "test":
        import subprocess

        root = Path(__file__).resolve().parent.parent
        return subprocess.call([sys.executable, "-m", "pytest", *args.pytest_args], cwd=root)
    settings = apply_flags(args)
    if args.command == "build-demo":
        from .demo.build import build_demo

        build_demo(settings, steps=args.steps, output=args.output)
        return 0
    from .server import serve

    return serve(settings)


def main(argv: list[str] | None = None, bootstrap: bool = True) -> int:
    """Entry point: parse, install on first use, run; user mistakes become one line and exit code 2."""
    args = build_parser().parse_args(argv)
    try:
        load_settings(args.settings)  # a broken settings file is reported before anything is installed
        if bootstrap:
            from .bootstrap import ensure_installed

            ensure_installed(dev=args.command == "test")
        return run(args)
    except VlmchatError as exc:
        print(f"vlmchat: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        return 130
