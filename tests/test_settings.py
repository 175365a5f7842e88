"""settings.toml loading, validation messages and command-line overrides."""

import subprocess
import sys

import pytest

from conftest import ROOT, write_settings
from vlmchat.cli import apply_flags, build_parser
from vlmchat.errors import SettingsError
from vlmchat.settings import Settings, load_settings


def test_shipped_settings_file_matches_the_documented_defaults():
    assert load_settings(ROOT / "settings.toml") == Settings()


@pytest.mark.parametrize("text, expected", [
    ("[model]\nquantisation = 'auto'\n", "Unknown setting 'model.quantisation'; allowed keys in [model]: id, quantization"),
    ("[model]\nquantization = '3bit'\n", "model.quantization must be one of auto, none, 8bit, 4bit (got '3bit')"),
    ("[generation]\ntemperature = 'hot'\n", "generation.temperature must be a float (got 'hot')"),
    ("[generation]\ntop_p = 1.5\n", "generation.top_p must be between 0.01 and 1.0 (got 1.5)"),
    ("[generation]\ntemperature = 3.0\n", "generation.temperature must be between 0.0 and 2.0 (got 3.0)"),
    ("[server]\nport = 99999\n", "server.port must be between 1 and 65535"),
    ("[server]\nshare = 'yes'\n", "server.share must be a bool"),
    ("[server]\nauth = 'nocolon'\n", "server.auth must look like 'user:password'"),
    ("[servr]\nport = 1\n", "Unknown section [servr]"),
    ("[file]\nx = 1\n", "allowed: model, generation, server, paths, caption, finetune, catalog, api, endpoints."),
    ("port = 7000\n", "is outside a section; put it under [server]."),
    ("seed = 1\n", "is outside a section; put it under [generation] or [finetune]."),
    ("colour = 'red'\n", "is outside a section; put it under one of: model, generation, server"),
    ("[model\nid = 1\n", "is not valid TOML"),
])
def test_wrong_key_or_value_names_the_key_and_the_allowed_values(tmp_path, text, expected):
    path = tmp_path / "settings.toml"
    path.write_text(text)
    with pytest.raises(SettingsError) as error:
        load_settings(path)
    assert expected in str(error.value)


def test_settings_are_frozen():
    with pytest.raises(Exception):
        Settings().model.id = "other"  # type: ignore[misc]


def test_cli_flags_override_the_file(tmp_path):
    path = tmp_path / "settings.toml"
    path.write_text("[model]\nid = 'from-file'\n[server]\nport = 8000\nhost = '127.0.0.1'\n")
    args = build_parser().parse_args(["--settings", str(path), "--port", "9001", "--model", "a/b",
                                      "--quantization", "4bit"])
    settings = apply_flags(args)
    assert (settings.model.id, settings.model.quantization, settings.server.port) == ("a/b", "4bit", 9001)
    assert settings.server.host == "127.0.0.1"


@pytest.mark.parametrize("argv", [["--settings", "{file}", "eval", "--data", "x"],
                                  ["eval", "--settings", "{file}", "--data", "x"],   # after the command, as often typed
                                  ["finetune", "--data", "x", "--settings", "{file}"],
                                  ["caption", "a.png", "--settings", "{file}"], ["plan", "--settings", "{file}"]])
def test_settings_file_is_taken_before_or_after_the_command(tmp_path, argv):
    path = tmp_path / "settings.toml"
    path.write_text("[model]\nid = 'from-file'\n")
    args = build_parser().parse_args([word.format(file=path) for word in argv])
    assert apply_flags(args).model.id == "from-file"


@pytest.mark.parametrize("argv", [["plan", "--model", "a/b"], ["caption", "--model", "a/b", "x.png"],
                                  ["handoff", "--model", "a/b"], ["download", "--model", "a/b"],
                                  ["finetune", "--data", "x", "--model", "a/b"],
                                  ["eval", "--model", "a/b", "--data", "x"]])
def test_model_is_taken_after_every_command_that_uses_one(argv):
    """`caption --model X`, `handoff --model X` and `download --model X` stopped on "unrecognized arguments"."""
    assert apply_flags(build_parser().parse_args(argv)).model.id == "a/b"


def test_download_refuses_two_different_models():
    from vlmchat.cli import run_download
    from vlmchat.errors import InputError

    args = build_parser().parse_args(["download", "x/y", "--model", "a/b"])
    with pytest.raises(InputError, match="launch.py download OWNER/NAME"):
        run_download(args, apply_flags(args))


def test_a_wrong_handoff_port_names_the_handoff_flag_not_the_server_setting():
    """`handoff --port 99999` (vLLM's port) said "server.port must be between 1 and 65535"."""
    from vlmchat.cli import run
    from vlmchat.errors import InputError

    with pytest.raises(InputError, match="--port between 1 and 65535"):
        run(build_parser().parse_args(["handoff", "--port", "99999"]))


@pytest.mark.parametrize("argv, message", [
    (["--port", "70000"], "server.port must be between 1 and 65535"),
    (["--settings", "does-not-exist.toml"], "does not exist"),
    (["--settings", "tests", "plan"], "cannot be read (Is a directory)"),  # was an IsADirectoryError traceback
])
def test_cli_reports_bad_settings_in_one_line_with_exit_code_2(argv, message):
    result = subprocess.run([sys.executable, "launch.py", *argv], cwd=ROOT, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("argv, pytest_args", [
    (["test", "-k", "settings", "-x"], ["-k", "settings", "-x"]),   # README's own example
    (["--settings", "s.toml", "test", "-q", "tests/test_plan.py"], ["-q", "tests/test_plan.py"]),
    (["test"], []),
])
def test_everything_after_test_goes_to_pytest(argv, pytest_args):
    from vlmchat.cli import _parse

    args = _parse(argv)
    assert (args.command, args.pytest_args) == ("test", pytest_args)


def test_a_model_named_test_is_not_the_test_command():
    from vlmchat.cli import _parse

    args = _parse(["--model", "test", "plan"])
    assert (args.command, args.model) == ("plan", "test")


def test_a_port_in_use_is_one_line_and_exit_code_2_before_the_model_loads():
    """A second start on the same port loaded the model, then printed a 20-line traceback (exit 1)."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([sys.executable, "launch.py", "--port", str(port)], cwd=ROOT, capture_output=True,
                                text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert f"Cannot serve on 127.0.0.1:{port}" in result.stderr and f"--port {port + 1}" in result.stderr
    assert "Traceback" not in result.stderr and "loading" not in result.stdout



def test_the_port_suggested_is_free_not_the_next_one_taken_too():
    """With 7860 and 7861 both held (two copies running), the advice was '--port 7861', which failed again."""
    import socket

    from vlmchat.errors import InputError
    from vlmchat.ui.server import check_port

    held = []
    while len(held) < 2:  # two neighbouring ports held by this test
        listener = socket.socket()
        try:
            listener.bind(("127.0.0.1", held[0].getsockname()[1] + 1 if held else 0))
        except OSError:  # the neighbour is someone else's: start again elsewhere
            for other in held + [listener]:
                other.close()
            held = []
            continue
        listener.listen()
        held.append(listener)
    port = held[0].getsockname()[1]
    try:
        with pytest.raises(InputError) as caught:
            check_port("127.0.0.1", port)
    finally:
        for listener in held:
            listener.close()
    suggested = int(str(caught.value).split("--port ")[1].rstrip("."))
    assert suggested > port + 1
    check_port("127.0.0.1", suggested)  # free indeed

def test_a_mistyped_start_adapter_is_one_line_with_the_adapters_before_the_model_loads():
    """`--adapter nosuch` was said after the model had loaded, without the names there are (newcomer reviewer)."""
    from conftest import free_port

    result = subprocess.run([sys.executable, "launch.py", "--adapter", "nosuch", "--port", str(free_port())],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "no adapter named 'nosuch'" in result.stderr
    assert "choose one of: demo-es" in result.stderr and "loading" not in result.stdout


@pytest.mark.parametrize("host, said", [("::", "is an IPv6 address"), ("0.0.0.0.", "is not an address or a name")])
def test_a_host_that_cannot_be_served_is_one_line_before_the_model_loads(host, said):
    """`--host ::` loaded the model, printed a password, then died on Gradio's 'Invalid port: ::7860'; a typo in the
    host was told to change the port (shared-app reviewer)."""
    from vlmchat.errors import InputError
    from vlmchat.ui.server import check_port

    with pytest.raises(InputError, match=said):
        check_port(host, 7860)


def test_top_p_has_one_range_in_settings_chat_and_the_api(tmp_path, demo_model_path):
    """settings.toml said 0.01 - 1, Chat's slider (and so /chat) 0.05 to 1, /v1 'above 0' (API tester)."""
    import dataclasses

    import gradio as gr

    from vlmchat.errors import FieldError
    from vlmchat.models.answers import GenerationParams
    from vlmchat.models.manager import ModelManager
    from vlmchat.settings import GenerationSettings
    from vlmchat.ui.app import build_app

    GenerationParams(top_p=0.01)
    with pytest.raises(FieldError, match="top-p must be between 0.01 and 1"):  # /v1 and /chat alike
        GenerationParams(top_p=0.005)
    assert next(f.metadata["range"] for f in dataclasses.fields(GenerationSettings) if f.name == "top_p") == (0.01, 1.0)
    assert "top_p = 1.0            # 0.01 - 1" in (ROOT / "settings.toml").read_text(encoding="utf-8")
    settings = load_settings(write_settings(tmp_path))
    slider, = [b for b in build_app(ModelManager(settings), settings).blocks.values()
               if isinstance(b, gr.Slider) and b.label == "Top-p"]
    assert slider.minimum == 0.01
