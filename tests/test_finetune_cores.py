"""A fine-tune started from the terminal is told whether a vlmchat UI shares the CPU with it."""

import socket
from pathlib import Path

from vlmchat.finetune import runner
from vlmchat.finetune.command import cpu_alone
from vlmchat.settings import Settings


def _settings(port: int) -> Settings:
    return Settings().override("server", port=port)


def test_alone_when_nothing_answers_on_the_ui_port_and_not_when_something_does():
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        port = listening.getsockname()[1]
        assert cpu_alone(_settings(port)) == ""
    assert f"127.0.0.1:{port}" in cpu_alone(_settings(port))


def test_the_reason_reaches_the_child_environment_and_only_when_alone(tmp_path, monkeypatch):
    from vlmchat.finetune.spec import JobSpec

    seen = []

    class Child:
        pid = 0

        def __init__(self, command, env, **kwargs):
            seen.append(env)

    monkeypatch.setattr(runner.subprocess, "Popen", Child)
    monkeypatch.setenv(runner.ALONE_ENV, "left over from the parent")
    spec = JobSpec.from_settings(Settings(), "cores", str(tmp_path), model_source=str(tmp_path))
    runner._launch(tmp_path, spec, resume=False, alone="no UI")
    runner._launch(tmp_path, spec, resume=False)
    assert seen[0][runner.ALONE_ENV] == "no UI" and runner.ALONE_ENV not in seen[1]


def test_a_job_alone_uses_every_core_and_says_why():
    from vlmchat.finetune.setup import choose_setup

    shared = choose_setup(on_gpu=False, cpu_cores=4)
    alone = choose_setup(on_gpu=False, cpu_cores=4, alone="no vlmchat UI answers on 127.0.0.1:7860")
    assert (shared.threads, alone.threads) == (3, 4)
    assert "one core left to the UI" in shared.reasons["device"]
    assert "all of them: no vlmchat UI answers" in alone.reasons["device"]


def test_a_ui_on_another_port_is_seen(app, tmp_path):
    """An app started with --port 7980 was missed: the terminal fine-tune probed 7860 only and took every core."""
    from conftest import free_port
    from vlmchat.settings import load_settings

    settings = load_settings(Path(app.log.name).parent / "settings.toml").override("server", port=free_port())
    assert cpu_alone(settings) == ""
    alone = Settings().override("paths", outputs=str(tmp_path)).override("server", port=settings.server.port)
    assert "no vlmchat UI answers" in cpu_alone(alone)
