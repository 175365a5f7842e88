"""First-run install: which torch build each kind of machine gets, and the fallback when its index fails.

The detection reads command outputs through an injected `run`: this CPU machine has no nvidia-smi
or ROCm, so their outputs below are recorded samples of the real tools' formats.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from vlmchat.bootstrap import (TORCH_INDEX, TORCH_PAIR, Hardware, TorchChoice, choose_torch, detect_hardware,
                               _pip_ok, install_torch, parse_nvidia_smi, parse_rocm_version)

NVIDIA_SMI = """\
+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI 570.86.15              Driver Version: 570.86.15      CUDA Version: {cuda}     |
|-----------------------------------------+------------------------+----------------------+
| GPU  Name                 Persistence-M | Bus-Id          Disp.A | Volatile Uncorr. ECC |
|   0  NVIDIA GeForce RTX 3090        Off |   00000000:01:00.0  On |                  N/A |
+-----------------------------------------+------------------------+----------------------+
"""
NVIDIA_SMI_L = "GPU 0: NVIDIA GeForce RTX 3090 (UUID: GPU-5b1c0e2a-1111-2222-3333-444455556666)\n"


def _index(build: str) -> tuple[str, ...]:
    return (*TORCH_PAIR, "--index-url", TORCH_INDEX + build)


@pytest.mark.parametrize("cuda, build", [((13, 0), "cu130"), ((13, 2), "cu130"), ((12, 9), "cu128"),
                                         ((12, 8), "cu128"), ((12, 6), "cu126"), ((12, 7), "cu126")])
def test_nvidia_gets_the_newest_cuda_build_its_driver_runs(cuda, build):
    choice = choose_torch(Hardware("Linux", "x86_64", cuda=cuda, gpu="NVIDIA GeForce RTX 3090"))
    assert choice.args == _index(build)
    assert choice.index_url == TORCH_INDEX + build
    assert "NVIDIA GeForce RTX 3090" in choice.reason and f"CUDA {cuda[0]}.{cuda[1]}" in choice.reason


def test_an_old_nvidia_driver_gets_the_cpu_build_and_is_told_to_update():
    choice = choose_torch(Hardware("Linux", "x86_64", cuda=(11, 8)))
    assert choice.args == _index("cpu")
    assert "update the NVIDIA driver" in choice.reason


@pytest.mark.parametrize("system, machine", [("Linux", "x86_64"), ("Linux", "aarch64"), ("Windows", "AMD64")])
def test_cpu_only_linux_and_windows_get_the_cpu_build(system, machine):
    choice = choose_torch(Hardware(system, machine))
    assert choice.args == _index("cpu")
    assert "no NVIDIA or AMD GPU" in choice.reason


def test_windows_with_nvidia_gets_a_cuda_build():
    assert choose_torch(Hardware("Windows", "AMD64", cuda=(12, 8))).args == _index("cu128")


@pytest.mark.parametrize("rocm, build", [((7, 1), "rocm7.1"), ((7, 0), "rocm7.0"), ((6, 4), "rocm6.4"),
                                         ((6, 2), "rocm6.4"), ((0, 0), "rocm6.4")])
def test_rocm_gets_a_rocm_build(rocm, build):
    choice = choose_torch(Hardware("Linux", "x86_64", rocm=rocm))
    assert choice.args == _index(build)
    assert "ROCm" in choice.reason
    assert ("older than the ROCm 6.4" in choice.reason) == (rocm == (6, 2))  # 6.2 got the 6.4 build without a word


def test_rocm_on_windows_is_told_that_pytorch_has_no_rocm_build_there():
    choice = choose_torch(Hardware("Windows", "AMD64", rocm=(6, 4)))
    assert choice.args == _index("cpu")
    assert "ROCm builds only for Linux" in choice.reason and "no NVIDIA or AMD GPU" not in choice.reason


def test_an_nvidia_driver_without_a_cuda_version_is_told_to_update():
    """nvidia-smi's "CUDA Version: N/A" was reported as "no NVIDIA or AMD GPU found"."""
    run, read = _fake_machine({("nvidia-smi",): NVIDIA_SMI.format(cuda="N/A"), ("nvidia-smi", "-L"): NVIDIA_SMI_L})
    choice = choose_torch(detect_hardware(run, read))
    assert choice.args == _index("cpu")
    assert "driver reports no CUDA version" in choice.reason and "reinstall the NVIDIA driver" in choice.reason


def test_macs_get_the_package_index_build():
    apple = choose_torch(Hardware("Darwin", "arm64"))
    assert apple.args == TORCH_PAIR and apple.index_url is None and "Apple silicon" in apple.reason
    assert choose_torch(Hardware("Darwin", "x86_64")).args == TORCH_PAIR


def test_vlmchat_torch_overrides_whatever_was_found():
    choice = choose_torch(Hardware("Linux", "x86_64", cuda=(12, 8)),
                          override="torch==2.13.0 torchvision==0.28.0 --index-url https://example.org/whl/cu128")
    assert choice.args == ("torch==2.13.0", "torchvision==0.28.0", "--index-url", "https://example.org/whl/cu128")
    assert choice.reason == "VLMCHAT_TORCH is set" and choice.index_url is None
    assert choose_torch(Hardware("Linux", "x86_64"), override="  ").args == _index("cpu")


def test_parsers_read_the_real_tools_formats():
    assert parse_nvidia_smi(NVIDIA_SMI.format(cuda="12.8"), NVIDIA_SMI_L) == ((12, 8), "NVIDIA GeForce RTX 3090")
    assert parse_nvidia_smi("no version here") == (None, "")
    assert parse_rocm_version("6.4.1-120\n") == (6, 4)
    assert parse_rocm_version("7.0.51831-a3e329ad8\n") == (7, 0)


def _fake_machine(outputs: dict, files: dict | None = None):
    return (lambda *command: outputs.get(command)), (lambda path: (files or {}).get(path))


def test_detect_hardware_reads_nvidia_smi():
    run, read = _fake_machine({("nvidia-smi",): NVIDIA_SMI.format(cuda="13.0"), ("nvidia-smi", "-L"): NVIDIA_SMI_L})
    found = detect_hardware(run, read)
    assert (found.cuda, found.gpu, found.rocm) == ((13, 0), "NVIDIA GeForce RTX 3090", None)


def test_detect_hardware_reads_rocm(monkeypatch):
    monkeypatch.delenv("ROCM_PATH", raising=False)
    run, read = _fake_machine({}, {"/opt/rocm/.info/version": "6.4.1-120\n"})
    assert detect_hardware(run, read).rocm == (6, 4)
    run, read = _fake_machine({("hipconfig", "--version"): "7.1.25424-4179531dcd"})
    assert detect_hardware(run, read).rocm == (7, 1)
    run, read = _fake_machine({("rocminfo",): "ROCk module is loaded\n"})
    assert detect_hardware(run, read).rocm == (0, 0)


def test_this_cpu_machine_is_detected_as_cpu_only():
    found = detect_hardware()
    assert found.cuda is None and found.rocm is None
    assert choose_torch(found).args == _index("cpu")


def test_install_prints_the_choice_and_how_to_override(capsys):
    calls = []
    install_torch(Path(sys.executable), choose_torch(Hardware("Linux", "x86_64")),
                  pip=lambda python, *args: calls.append(args) or True)
    out = capsys.readouterr().out
    assert "the CPU build" in out and "VLMCHAT_TORCH" in out
    assert len(calls) == 1 and calls[0][:4] == _index("cpu")


def test_a_failed_pip_stops_with_one_line(capsys):
    with pytest.raises(SystemExit) as stopped:
        install_torch(Path(sys.executable), TorchChoice(TORCH_PAIR, "test"), pip=lambda *a: False)
    assert "installing torch failed" in str(stopped.value) and "VLMCHAT_TORCH" in str(stopped.value)


@pytest.mark.slow
def test_an_unreachable_index_falls_back_to_the_package_index(capfd, monkeypatch):
    """Real pip against download.pytorch.org, which this machine cannot reach; --dry-run installs nothing.

    pip's machine-wide config here lists local wheels that would satisfy torch even when the index
    fails, so it is switched off: the index attempt must really fail. The fallback then really asks
    the package index (torchvision only, to keep the download small: 7 MB).
    """
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    url = TORCH_INDEX + "cpu"
    choice = TorchChoice((TORCH_PAIR[1], "--index-url", url), "test", url)
    seen = []

    def pip(python, *args):
        seen.append(args)
        return _pip_ok(python, *args)

    install_torch(Path(sys.executable), choice, pip=pip, extra=("--dry-run", "--no-deps", "--ignore-installed"))
    out, err = capfd.readouterr()
    assert f"{url} could not be reached" in out
    assert err.count("ERROR") == 0  # pip's errors about the index it could not reach were shown before that line
    assert seen == [(TORCH_PAIR[1], "--index-url", url, "--retries", "1", "--dry-run", "--no-deps", "--ignore-installed"),
                    (TORCH_PAIR[1], "--dry-run", "--no-deps", "--ignore-installed")]
    assert f"Would install {TORCH_PAIR[1].replace('==', '-')}" in out
