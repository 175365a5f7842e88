"""Importing vlmchat and asking for --help must stay light: no torch, no gradio."""

import subprocess
import sys
import time

from conftest import ROOT


def _modules_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys; print(' '.join(sys.modules))"],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_import_vlmchat_pulls_in_neither_torch_nor_gradio():
    modules = _modules_after("import vlmchat, vlmchat.cli, vlmchat.settings, vlmchat.models.manager, vlmchat.models.conversation")
    assert "vlmchat.models.manager" in modules
    assert not {"torch", "gradio", "transformers"} & modules


def test_help_answers_fast_without_torch():
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-X", "importtime", "launch.py", "--help"], cwd=ROOT,
                            capture_output=True, text=True)
    elapsed = time.monotonic() - started
    assert result.returncode == 0
    assert "build-demo" in result.stdout and "--model" in result.stdout
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if "|" in line}
    assert "torch" not in imported and "gradio" not in imported
    assert elapsed < 5, f"--help took {elapsed:.1f}s"



def test_a_mistyped_option_is_named_with_the_one_meant(capsys):
    """`--prot 7942` said "argument COMMAND: invalid choice: '7942'" (argparse took the value for the command);
    an unambiguous start of an option (`--por`) is still that option."""
    import pytest

    from vlmchat.cli import _parse

    with pytest.raises(SystemExit) as stopped:
        _parse(["--prot", "7942"])
    assert stopped.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(
        "unrecognized argument: --prot (did you mean --port?)")
    assert _parse(["--por", "7942"]).port == 7942 and _parse(["--model", "demo", "caption", "x"]).command == "caption"
