"""Shared fixtures: the shipped demo model, settings pointing at temp folders, a launched app."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEMO_MODEL = ROOT / "models" / "vlmchat-demo"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_settings(folder: Path, **server) -> Path:
    """A settings file using the shipped demo model and temp folders for everything written.

    The shipped adapters are copied into the temp adapters folder, so tests may change it freely.
    """
    import shutil

    if not (folder / "adapters").exists():
        shutil.copytree(ROOT / "adapters", folder / "adapters")
    lines = ["[paths]", f'models = "{(ROOT / "models").as_posix()}"',
             f'adapters = "{(folder / "adapters").as_posix()}"', f'outputs = "{(folder / "outputs").as_posix()}"',
             "[server]"] + [f"{k} = {v!r}".replace("'", '"') for k, v in server.items()]
    path = folder / "settings.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


class LaunchedApp:
    """`python launch.py` running in a child process, as a user starts it."""

    def __init__(self, folder: Path, *flags: str, env: dict | None = None, port: int | None = None, **server):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        settings = write_settings(folder, **server)
        self.log = open(folder / "app.log", "w+", encoding="utf-8")
        env = dict(os.environ, VLMCHAT_NO_BOOTSTRAP="1", GRADIO_ANALYTICS_ENABLED="False", PYTHONUNBUFFERED="1",
                   **(env or {}))
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "launch.py"), "--settings", str(settings), "--port", str(self.port), *flags],
            cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT,
        )

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def wait_ready(self, timeout: float = 180) -> "LaunchedApp":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the app exited with {self.process.returncode}:\n{self.output()}")
            try:
                with urllib.request.urlopen(self.url, timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.3)
        raise TimeoutError(f"the app did not answer within {timeout}s:\n{self.output()}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


_CLI_SESSION = r"""
import json, os, runpy, sys, traceback

commands, replies = os.fdopen(os.dup(0)), os.fdopen(os.dup(1), "w")
nothing = os.open(os.devnull, os.O_RDONLY)
os.dup2(nothing, 0)  # what a run reads from stdin is an empty terminal, as under subprocess.run, not these commands
for line in commands:
    argv, out_path, err_path = json.loads(line)
    sys.stdout.flush(), sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(out_path, "w") as out, open(err_path, "w") as err:
        os.dup2(out.fileno(), 1), os.dup2(err.fileno(), 2)  # the file descriptors: whatever holds sys.stderr writes here
        sys.argv = ["launch.py", *argv]
        try:
            runpy.run_path("launch.py", run_name="__main__")
            code = 0
        except SystemExit as exc:  # what the interpreter does with it at exit
            code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
            if not isinstance(exc.code, (int, type(None))):
                print(exc.code, file=sys.stderr)
        except BaseException:  # an uncaught exception: a traceback and exit code 1
            traceback.print_exc()
            code = 1
        sys.stdout.flush(), sys.stderr.flush()
        os.dup2(saved[0], 1), os.dup2(saved[1], 2)
    os.close(saved[0]), os.close(saved[1])
    replies.write(json.dumps(code) + "\n")
    replies.flush()
"""


class CliSession:
    """`python launch.py ARGS` run several times in one Python process, one run after another, each as the terminal
    runs it (`launch.py` as `__main__`, its exit code, its stdout and stderr file descriptors captured): the imports
    and start of a process (~5 s with torch) are paid once. The first run is a fresh process's; later ones find the
    modules imported."""

    def __init__(self, folder: Path, env: dict | None = None):
        self.folder, self.runs = folder, 0
        folder.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, VLMCHAT_NO_BOOTSTRAP="1", **(env or {}))
        self.process = subprocess.Popen([sys.executable, "-c", _CLI_SESSION], cwd=ROOT, env=env, text=True,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def run(self, *args, timeout: float = 300) -> subprocess.CompletedProcess:
        import json
        import threading

        self.runs += 1
        out, err = self.folder / f"run-{self.runs}.out", self.folder / f"run-{self.runs}.err"
        argv = [str(a) for a in args]
        self.process.stdin.write(json.dumps([argv, str(out), str(err)]) + "\n")
        self.process.stdin.flush()
        timer = threading.Timer(timeout, self.process.kill)
        timer.start()
        try:
            reply = self.process.stdout.readline()
        finally:
            timer.cancel()
        if not reply:
            raise RuntimeError(f"the CLI session ended (exit {self.process.wait()}) during {argv}:\n"
                               f"{err.read_text(errors='replace')[-3000:] if err.exists() else ''}")
        return subprocess.CompletedProcess(["launch.py", *argv], json.loads(reply),
                                           out.read_text(encoding="utf-8"), err.read_text(encoding="utf-8"))

    def close(self) -> None:
        self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process.stdout.close()

    def __enter__(self) -> "CliSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@pytest.fixture(scope="session")
def demo_model_path() -> Path:
    if not (DEMO_MODEL / "config.json").exists():
        pytest.fail(f"the shipped demo model is missing from {DEMO_MODEL}; run `python launch.py build-demo`")
    return DEMO_MODEL


@pytest.fixture(scope="session")
def demo_settings(tmp_path_factory, demo_model_path):
    from vlmchat.settings import load_settings

    return load_settings(write_settings(tmp_path_factory.mktemp("settings")))


@pytest.fixture(scope="session")
def manager(demo_settings):
    from vlmchat.models.manager import ModelManager

    manager = ModelManager(demo_settings)
    manager.load()
    yield manager
    manager.unload()


@pytest.fixture(scope="session")
def app(tmp_path_factory, demo_model_path):
    launched = LaunchedApp(tmp_path_factory.mktemp("app")).wait_ready()
    yield launched
    launched.stop()


SHARED_LOGIN = ("ana", "pw-for-ana")


@pytest.fixture(scope="session")
def shared_app(tmp_path_factory, demo_model_path):
    """The app as shared with other machines: `launch.py --host 0.0.0.0 --auth ana:pw-for-ana` (requests still go to
    127.0.0.1); one for the session, as `app` is for the app on loopback."""
    launched = LaunchedApp(tmp_path_factory.mktemp("shared"), "--auth", ":".join(SHARED_LOGIN),
                           host="0.0.0.0").wait_ready()
    yield launched
    launched.stop()


@pytest.fixture(scope="session")
def picture_files(tmp_path_factory):
    """Held-out pictures saved as files, keyed by (colour, shape): shapes at half the shorter side, the middle of
    the demo's range, as these tests check the app, not the demo's accuracy (test_demo_model.py and
    benchmarks/demo_range.py do; a build that reads 999 of 1,000 held-out pictures misread one of seed 7's at 47%
    of a 2:1 picture's height)."""
    from vlmchat.demo.heldout import heldout_pictures

    folder = tmp_path_factory.mktemp("pictures")
    files = {}
    for index, (image, colour, shape) in enumerate(heldout_pictures(12, seed=7, size=0.5)):
        path = folder / f"{index:02d}-{colour}-{shape}.png"
        image.save(path)
        files.setdefault((colour, shape), path)
    return files


@pytest.fixture(scope="session")
def random_llava(tmp_path_factory):
    """A tiny LLaVA with random weights: it never says <|end|> (nor another special token, which streams no text:
    with a demo vocabulary tried on 2026-12-03 its greedy answer was only <|assistant|>), so it writes text until
    stopped."""
    from vlmchat.demo.build import SPECIAL_TOKENS, build_model, build_processor

    folder = tmp_path_factory.mktemp("random-llava")
    processor = build_processor()
    model = build_model(processor, seed=1)
    model.generation_config.suppress_tokens = processor.tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A browser test that fails reports what its page showed then (CI keeps only the printed report) and leaves
    a screenshot in outputs/test-artifacts/failed-<test>.png."""
    outcome = yield
    report = outcome.get_result()
    page = getattr(item, "funcargs", {}).get("page")
    if report.when != "call" or not report.failed or page is None or not hasattr(page, "inner_text"):
        return
    try:
        shown = page.evaluate(
            "() => [...document.querySelectorAll('[role=tabpanel]:not([hidden]), .toast-body')]"
            ".map(e => e.innerText).join('\\n---\\n') + '\\n--- inputs: ' + [...document.querySelectorAll("
            "'[role=tabpanel] textarea, [role=tabpanel] input[type=text]')].map(e => e.value).join(' | ')")
        folder = Path(__file__).resolve().parent.parent / "outputs" / "test-artifacts"
        folder.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(folder / f"failed-{item.name}.png"), full_page=True)
    except Exception as exc:  # the page itself may be what broke
        shown = f"(the page could not be read: {exc})"
    report.sections.append(("what the page showed", shown[-6000:]))
