"""First-run set-up: make sure the runtime dependencies are importable, installing them if not.

Standard library only, because it runs before anything is installed. Without the dependencies it
creates `.venv/` in the project folder, installs requirements.txt there (torch and torchvision
first, pinned to the releases CI tests) and re-runs the same command with that interpreter.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
RUNTIME_MODULES = ("torch", "torchvision", "transformers", "gradio", "peft", "accelerate", "PIL", "huggingface_hub",
                   "safetensors", "tokenizers", "scipy", "sacrebleu", "rouge_score", "matplotlib", "pandas", "pyarrow", "openai")
DEV_MODULES = ("pytest", "gradio_client", "playwright")
# The pair CI tests; torchvision is needed by some processors (Qwen2-VL's). VLMCHAT_TORCH overrides it
# (pip arguments, e.g. another pair or an --index-url for your CUDA/ROCm/CPU build).
TORCH_PIN = os.environ.get("VLMCHAT_TORCH", "torch==2.14.1 torchvision==0.29.1")


def _missing(modules: tuple[str, ...]) -> list[str]:
    return [m for m in modules if importlib.util.find_spec(m) is None]


def _venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _pip(python: Path, *args: str) -> None:
    command = [str(python), "-m", "pip", "install", "--disable-pip-version-check", *args]
    print("vlmchat: installing:", " ".join(args), flush=True)
    if subprocess.call(command) != 0:
        sys.exit("vlmchat: installing dependencies failed (see pip's message above); "
                 "fix the network or pip problem and run the command again.")


def ensure_installed(dev: bool = False) -> None:
    """Return if everything needed imports; otherwise install into .venv and re-exec there."""
    wanted = RUNTIME_MODULES + (DEV_MODULES if dev else ())
    if not _missing(wanted) or os.environ.get("VLMCHAT_NO_BOOTSTRAP"):
        return
    python = _venv_python()
    in_our_venv = Path(sys.prefix).resolve() == VENV.resolve()
    if not in_our_venv:
        if not python.exists():
            print(f"vlmchat: first run: creating {VENV}", flush=True)
            venv.create(VENV, with_pip=True)
        os.execv(str(python), [str(python), *sys.argv])
    if _missing(("torch", "torchvision")):
        _pip(python, *TORCH_PIN.split())
    _pip(python, "-r", str(ROOT / "requirements.txt"))
    if dev:
        _pip(python, "-r", str(ROOT / "requirements-dev.txt"))
    still = _missing(wanted)
    if still:
        sys.exit(f"vlmchat: {', '.join(still)} still cannot be imported after installing; "
                 f"delete {VENV} and run again.")
