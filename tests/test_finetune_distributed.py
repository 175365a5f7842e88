"""Training beyond one GPU: FSDP2 over 2 CPU processes (gloo) writes the same adapter as one process,
and strategies a job cannot use are refused before anything starts."""

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, free_port, write_settings
from test_finetune_data import write_caption_folder
from test_finetune_job import _cli
from vlmchat.errors import InputError
from vlmchat.finetune import runner
from vlmchat.finetune.loop import STATE_FILE, checkpoints
from vlmchat.finetune.progress import read_events
from vlmchat.finetune.spec import JobSpec
from vlmchat.settings import load_settings


TINY_FLAGS = ("--max-steps", "3", "--batch-size", "2", "--grad-accumulation", "1", "--learning-rate", "0.003",
              "--eval-every", "0", "--checkpoint-every", "1", "--lora-dropout", "0", "--device", "cpu", "--overwrite")


def _finish(job):
    status = runner.wait(job, poll_s=0.3, timeout_s=240)
    assert status.state == "done", (status.message, (job / "log.txt").read_text()[-3000:])


def _weights(folder):
    from safetensors.torch import load_file

    return load_file(folder / "adapter_model.safetensors")


def _launch_written_job(output: str, job_log):
    """Run the printed `accelerate launch` command as one machine of one (rank 0 at 127.0.0.1)."""
    command = output[output.index("accelerate launch"):].split("\n# ")[0].replace(" \\\n    ", " ")
    values = {"RANK": "0", "MAIN_IP": "127.0.0.1", "MACHINES": "1", "29500": str(free_port())}
    argv = [values.get(word, word) for word in shlex.split(command)]
    env = dict(os.environ, VLMCHAT_NO_BOOTSTRAP="1", OMP_NUM_THREADS="1")
    with open(job_log, "w", encoding="utf-8") as log:
        done = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", *argv[2:]], cwd=ROOT, env=env,
                              stdout=log, stderr=subprocess.STDOUT, timeout=240)
    assert done.returncode == 0, Path(job_log).read_text()[-3000:]


@pytest.mark.slow
def test_fsdp_over_two_cpu_processes_writes_the_adapter_one_process_writes(tmp_path, demo_model_path):
    """The written job's multi-machine command, run as 1 machine x 2 CPU processes under FSDP2; then a resume."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    settings_file = write_settings(tmp_path)
    settings = load_settings(settings_file)
    data = write_caption_folder(tmp_path / "captions", 10)
    written = _cli(settings_file, "--data", str(data), "--name", "fsdp", "--num-processes", "2", "--distributed",
                   "fsdp", "--write-job", *TINY_FLAGS)
    assert written.returncode == 0, written.stderr[-3000:]
    assert "--num_processes 2 -m vlmchat.finetune" in written.stdout and "torchrun --nnodes MACHINES" in written.stdout
    job = runner.latest_job(runner.jobs_folder(settings), "fsdp")
    _launch_written_job(written.stdout, job / "log.txt")
    single = JobSpec.from_settings(settings, "single", str(data), model_source=str(demo_model_path), max_steps=3,
                                   batch_size=2, grad_accumulation=1, eval_every=0, device="cpu")
    _finish(runner.start_job(single, runner.jobs_folder(settings)))

    adapters = tmp_path / "adapters"
    events = read_events(job / "progress.jsonl")
    start = next(e for e in events if e["event"] == "start")
    assert start["processes"] == 2
    assert start["setup"]["sharding"] == "fsdp: weights, gradients and AdamW state split over 2 processes"
    assert json.loads((adapters / "fsdp" / "vlmchat.json").read_text())["settings"]["distributed"] == "fsdp"
    assert [e["step"] for e in events if e["event"] == "checkpoint"] == [1, 2]  # gathered from the shards
    fsdp_weights, single_weights = _weights(adapters / "fsdp"), _weights(adapters / "single")
    assert fsdp_weights.keys() == single_weights.keys()
    assert all(fsdp_weights[k].shape == single_weights[k].shape for k in fsdp_weights)
    checkpoint = torch.load(checkpoints(job)[-1] / STATE_FILE, weights_only=False)
    assert len(checkpoint["weights"]) == len(fsdp_weights) and all(".lora_" in k for k in checkpoint["weights"])

    # as if the run had stopped after its step-2 checkpoint (a finished job is not resumed): its end is forgotten
    progress = job / "progress.jsonl"
    progress.write_text("".join(line + "\n" for line in progress.read_text().splitlines()
                                if json.loads(line)["event"] != "done"))
    _finish(runner.resume_job(job))  # step 3 again, from the step-2 checkpoint loaded into the shards
    assert [e["step"] for e in read_events(job / "progress.jsonl") if e["event"] == "resume"] == [2]
    resumed = _weights(adapters / "fsdp")
    assert all(torch.allclose(resumed[k], fsdp_weights[k], atol=1e-6) for k in fsdp_weights)

    base = AutoModelForImageTextToText.from_pretrained(demo_model_path).eval()
    ids = torch.arange(3, 40).unsqueeze(0)
    with torch.no_grad():
        before = base(input_ids=ids).logits
        after = PeftModel.from_pretrained(base, adapters / "fsdp").eval()(input_ids=ids).logits
    assert not torch.allclose(before, after, atol=1e-5)  # the gathered LoRA weights change the model


@pytest.mark.slow
def test_more_processes_than_validation_samples_finish(tmp_path, demo_model_path):
    """3 DDP processes and 2 validation samples: the process without one went to the sum while the others ran a
    forward pass (DDP syncs buffers inside it), and the job hung after its last step, every login's fine-tune
    refused meanwhile (blind tester)."""
    settings_file = write_settings(tmp_path)
    data = write_caption_folder(tmp_path / "captions", 10)  # 8 to train, 2 to validate
    result = _cli(settings_file, "--data", str(data), "--name", "three", "--num-processes", "3", "--max-steps", "1",
                  "--no-evaluate", "--device", "cpu")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "final_eval_loss" in result.stdout and (tmp_path / "adapters" / "three" / "vlmchat.json").exists()


def test_strategies_a_job_cannot_use_are_refused_before_anything_starts(tmp_path, demo_model_path):
    settings = load_settings(write_settings(tmp_path))
    data = str(tmp_path / "captions")
    with pytest.raises(InputError, match="set num_processes to 2 or more"):
        JobSpec.from_settings(settings, "x", data, distributed="fsdp")
    with pytest.raises(InputError, match="QLoRA"):
        JobSpec.from_settings(settings, "x", data, distributed="fsdp", num_processes=2, quantization="4bit")
    with pytest.raises(InputError, match="distributed must be one of ddp, fsdp, deepspeed"):
        JobSpec.from_settings(settings, "x", data, distributed="zero", num_processes=2)
    spec = JobSpec.from_settings(settings, "x", data, distributed="fsdp", num_processes=2)
    assert "--distributed fsdp" in spec.command() and JobSpec.from_file(_saved(tmp_path, spec)) == spec


def _saved(folder, spec):
    path = folder / "job.json"
    path.write_text(spec.to_json(), encoding="utf-8")
    return path


def test_deepspeed_without_deepspeed_installed_is_a_user_error_with_the_fix(tmp_path, demo_model_path):
    import importlib.util

    if importlib.util.find_spec("deepspeed") is not None:
        pytest.skip("DeepSpeed is installed here")
    settings_file = write_settings(tmp_path)
    data = write_caption_folder(tmp_path / "captions", 4)
    result = _cli(settings_file, "--data", str(data), "--name", "ds", "--num-processes", "2", "--distributed",
                  "deepspeed")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == ("vlmchat: DeepSpeed is not installed; pip install deepspeed, "
                                                      "or use --distributed fsdp.")
    assert not (tmp_path / "outputs" / "finetune").exists()  # no job folder: nothing started
