"""First-run set-up: make sure the runtime dependencies are importable, installing them if not.

Standard library only, because it runs before anything is installed. Without the dependencies it
creates `.venv/` in the project folder, installs the torch build that fits this machine's hardware
(`choose_torch`: CUDA, ROCm, Apple silicon or CPU-only, overridden by VLMCHAT_TORCH), then
requirements.txt, and re-runs the same command with that interpreter.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import venv
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
RUNTIME_MODULES = ("torch", "torchvision", "transformers", "gradio", "peft", "accelerate", "PIL", "huggingface_hub",
                   "safetensors", "tokenizers", "scipy", "sacrebleu", "rouge_score", "matplotlib", "pandas", "pyarrow", "openai")
DEV_MODULES = ("pytest", "gradio_client", "playwright")
# The pair CI tests; torchvision is needed by some processors (Qwen2-VL's).
TORCH_PAIR = ("torch==2.14.1", "torchvision==0.29.1")
TORCH_INDEX = "https://download.pytorch.org/whl/"
# PyTorch's own wheel indexes for the pair above, newest first, with the lowest driver/runtime version
# each needs. They follow PyTorch's release matrix for 2.9-2.10 (CUDA 12.6, 12.8, 13.0; ROCm 6.4, 7.0,
# 7.1); download.pytorch.org is not reachable from where this was written, so a build missing there
# falls back to the package index (`install_torch`), and VLMCHAT_TORCH picks any other.
CUDA_BUILDS = (((13, 0), "cu130"), ((12, 8), "cu128"), ((12, 6), "cu126"))
ROCM_BUILDS = (((7, 1), "rocm7.1"), ((7, 0), "rocm7.0"), ((6, 4), "rocm6.4"))
OVERRIDE_HINT = ('To choose another build, set VLMCHAT_TORCH to the pip arguments, e.g. '
                 f'VLMCHAT_TORCH="{" ".join(TORCH_PAIR)} --index-url {TORCH_INDEX}cu128", and delete .venv/.')

Version = tuple[int, int]


@dataclass(frozen=True)
class Hardware:
    """What decides the torch build: the OS, the CPU, an NVIDIA driver's CUDA version, a ROCm install."""

    system: str  # platform.system(): "Linux", "Windows", "Darwin"
    machine: str  # platform.machine(): "x86_64", "AMD64", "arm64", "aarch64"
    cuda: Version | None = None  # the highest CUDA version the NVIDIA driver supports (nvidia-smi)
    gpu: str = ""  # the first NVIDIA GPU's name (nvidia-smi -L), for the message
    rocm: Version | None = None  # the installed ROCm version; (0, 0) when ROCm is there but its version is not


@dataclass(frozen=True)
class TorchChoice:
    """The pip arguments that install torch + torchvision, why, and the wheel index they use (if any)."""

    args: tuple[str, ...]
    reason: str
    index_url: str | None = None

    def describe(self) -> str:
        """One line for the terminal: what will be installed and why."""
        return f"vlmchat: torch for this machine: {self.reason} -> pip install {' '.join(self.args)}"


def _from_index(build: str, reason: str) -> TorchChoice:
    url = TORCH_INDEX + build
    return TorchChoice((*TORCH_PAIR, "--index-url", url), reason, url)


def _newest_build(version: Version, builds) -> str | None:
    return next((build for needs, build in builds if version >= needs), None)


def choose_torch(hardware: Hardware, override: str | None = None) -> TorchChoice:
    """The torch build for `hardware` (pure): VLMCHAT_TORCH's arguments if given, else by what was found."""
    if override and override.strip():
        return TorchChoice(tuple(shlex.split(override)), "VLMCHAT_TORCH is set")
    if hardware.system == "Darwin":
        if hardware.machine == "arm64":
            return TorchChoice(TORCH_PAIR, "Apple silicon: the package index's build (uses the GPU through Metal)")
        return TorchChoice(TORCH_PAIR, "an Intel Mac: the package index's build (PyTorch publishes none after "
                                       "2.2 for Intel Macs; if pip finds none, set VLMCHAT_TORCH to an older pair)")
    if hardware.cuda is not None:
        gpu = hardware.gpu or "an NVIDIA GPU"
        found = f"{gpu}, driver supports CUDA {hardware.cuda[0]}.{hardware.cuda[1]}"
        build = _newest_build(hardware.cuda, CUDA_BUILDS)
        if build:
            return _from_index(build, f"{found}: the CUDA {build[2:-1]}.{build[-1]} build")
        oldest = CUDA_BUILDS[-1][0]
        return _from_index("cpu", f"{found}, older than the CUDA {oldest[0]}.{oldest[1]} that torch's builds need: "
                                  "the CPU build (update the NVIDIA driver to use the GPU)")
    if hardware.rocm is not None:
        shown = "of unknown version" if hardware.rocm == (0, 0) else f"{hardware.rocm[0]}.{hardware.rocm[1]}"
        if hardware.system != "Linux":
            return _from_index("cpu", f"AMD ROCm {shown} found, but PyTorch publishes ROCm builds only for Linux: "
                                      "the CPU build")
        oldest = ROCM_BUILDS[-1][1]
        build = _newest_build(hardware.rocm, ROCM_BUILDS)
        if build is None and hardware.rocm != (0, 0):
            return _from_index(oldest, f"AMD ROCm {shown}, older than the ROCm {oldest[4:]} that torch's builds "
                                       f"need: the ROCm {oldest[4:]} build (update ROCm if it does not use the GPU)")
        return _from_index(build or oldest, f"AMD ROCm {shown} found: the ROCm {(build or oldest)[4:]} build")
    if hardware.gpu:  # nvidia-smi lists a GPU but shows "CUDA Version: N/A"
        return _from_index("cpu", f"{hardware.gpu} found, but its driver reports no CUDA version: the CPU build "
                                  "(update or reinstall the NVIDIA driver to use the GPU)")
    return _from_index("cpu", "no NVIDIA or AMD GPU found: the CPU build (on Linux about 4.5 GB "
                                    "smaller than the package index's CUDA build)")


def _version(text: str, pattern: str) -> Version | None:
    match = re.search(pattern, text)
    return (int(match.group(1)), int(match.group(2))) if match else None


def parse_nvidia_smi(table: str, listing: str = "") -> tuple[Version | None, str]:
    """(driver's CUDA version, first GPU's name) from `nvidia-smi` and `nvidia-smi -L` output."""
    name = re.search(r"GPU \d+: (.+?)(?: \(UUID|$)", listing, re.MULTILINE)
    return _version(table, r"CUDA Version:\s*(\d+)\.(\d+)"), name.group(1).strip() if name else ""


def parse_rocm_version(text: str) -> Version | None:
    """The ROCm version in /opt/rocm/.info/version or `hipconfig --version` output ("6.4.1-120" -> (6, 4))."""
    return _version(text, r"(\d+)\.(\d+)")


def _command_output(*command: str) -> str | None:
    """A command's stdout, or None when it is not installed or fails."""
    if shutil.which(command[0]) is None:
        return None
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def _read_text(path: str) -> str | None:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def detect_hardware(run: Callable[..., str | None] = _command_output,
                    read: Callable[[str], str | None] = _read_text) -> Hardware:
    """This machine's Hardware; `run` (a command's stdout or None) and `read` (a file or None) are injectable."""
    system, machine = platform.system(), platform.machine()
    table = run("nvidia-smi")
    cuda, gpu = parse_nvidia_smi(table, run("nvidia-smi", "-L") or "") if table else (None, "")
    rocm = None
    rocm_root = os.environ.get("ROCM_PATH", "/opt/rocm")
    found = read(f"{rocm_root}/.info/version") or run("hipconfig", "--version")
    if found is not None:
        rocm = parse_rocm_version(found) or (0, 0)
    elif run("rocminfo") is not None:
        rocm = (0, 0)
    return Hardware(system, machine, cuda, gpu, rocm)


def _pip_ok(python: Path, *args: str) -> bool:
    """pip install `args`. From a wheel index of PyTorch's (`--index-url`, which has a fallback), pip's warnings and
    errors are kept back: its "ERROR: Could not find a version..." lines came before vlmchat's one line saying that
    the package index is used instead, and read as if the install had failed (new-user tester)."""
    command = [str(python), "-m", "pip", "install", "--disable-pip-version-check", *args]
    print("vlmchat: installing:", " ".join(args), flush=True)
    if "--index-url" in args:
        return subprocess.run(command, stderr=subprocess.DEVNULL).returncode == 0
    return subprocess.call(command) == 0


def _pip(python: Path, *args: str) -> None:
    if not _pip_ok(python, *args):
        sys.exit("vlmchat: installing dependencies failed (see pip's message above); "
                 "fix the network or pip problem and run the command again.")


def _without_index(args: tuple[str, ...]) -> tuple[str, ...]:
    kept = list(args)
    while "--index-url" in kept:
        at = kept.index("--index-url")
        del kept[at:at + 2]
    return tuple(kept)


def install_torch(python: Path, choice: TorchChoice, pip: Callable[..., bool] = _pip_ok,
                  extra: tuple[str, ...] = ()) -> None:
    """Install `choice`; if its wheel index fails, say so in one line and install from the package index.

    `pip(python, *args) -> ok` and `extra` (more pip arguments, e.g. --dry-run) are for tests.
    """
    print(choice.describe(), flush=True)
    print(f"vlmchat: {OVERRIDE_HINT}", flush=True)
    if choice.index_url is None:
        ok = pip(python, *choice.args, *extra)
    else:
        ok = pip(python, *choice.args, "--retries", "1", *extra)
        if not ok:
            print(f"vlmchat: {choice.index_url} could not be reached or has no such build; installing torch "
                  "from the package index instead (on Linux that is the larger CUDA build).", flush=True)
            ok = pip(python, *_without_index(choice.args), *extra)
    if not ok:
        sys.exit("vlmchat: installing torch failed (see pip's message above); fix the network or pip problem "
                 "and run the command again, or set VLMCHAT_TORCH.")


def _missing(modules: tuple[str, ...]) -> list[str]:
    return [m for m in modules if importlib.util.find_spec(m) is None]


def _venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


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
        install_torch(python, choose_torch(detect_hardware(), os.environ.get("VLMCHAT_TORCH")))
    _pip(python, "-r", str(ROOT / "requirements.txt"))
    if dev:
        _pip(python, "-r", str(ROOT / "requirements-dev.txt"))
    still = _missing(wanted)
    if still:
        sys.exit(f"vlmchat: {', '.join(still)} still cannot be imported after installing; "
                 f"delete {VENV} and run again.")
