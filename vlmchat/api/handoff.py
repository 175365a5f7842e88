"""When one machine is not enough: the vLLM / SGLang commands that serve the same base and adapters,
and the commands that fine-tune over several GPUs or machines.

`handoff_text` writes the commands for the configured base model and every adapter in the
adapters folder, and checks each adapter against what vLLM's LoRA loader accepts (read from
vLLM's source, vllm/lora/lora_model.py `from_local_checkpoint` and the supported-models table):

- vLLM reads `adapter_config.json` (a PEFT LoRA: no DoRA) and `adapter_model.safetensors`; every
  weight name must parse as `...<module>.lora_A.weight` / `.lora_B.weight` after
  `base_model.model.` and the family's HF-to-vLLM name mapping, and the module's last part must be
  one of the model's LoRA-able linear layers (q/k/v/o/gate/up/down_proj for the families below).
  For safetensors the weight names decide; the `target_modules` regex in the config is not used.
- For multimodal models vLLM adds LoRA to the language model only: weights on the vision tower or
  projector (vlmchat's targets "all" or "language+projector") are skipped with a warning, so that
  adapter would answer differently under vLLM.
- The rank must be at most --max-lora-rank (printed from the adapters found).
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path

from ..lora.store import CONFIG_FILE, WEIGHTS_FILE, incompatibility, list_adapters
from ..settings import Settings

# transformers model_type -> (vLLM architecture, LoRA supported, why not), from vLLM's
# docs/models/supported_models.md (multimodal table, LoRA column).
NO_PIPELINE = "no pipeline parallelism"
VLLM_UNSERVED = {"mllama"}  # not in vLLM's supported-models list at all (its note says why)
VLLM_FAMILIES = {
    "llava": ("LlavaForConditionalGeneration", True, ""),
    "llava_next": ("LlavaNextForConditionalGeneration", True, ""),
    "qwen2_vl": ("Qwen2VLForConditionalGeneration", True, ""),
    "qwen2_5_vl": ("Qwen2_5_VLForConditionalGeneration", True, ""),
    "idefics3": ("Idefics3ForConditionalGeneration", True, NO_PIPELINE),
    "smolvlm": ("SmolVLMForConditionalGeneration", True, NO_PIPELINE),
    "paligemma": ("PaliGemmaForConditionalGeneration", True, ""),
    "gemma3": ("Gemma3ForConditionalGeneration", True, ""),
    "chameleon": ("ChameleonForConditionalGeneration", False,
                  "vLLM serves Chameleon but its implementation does not support LoRA; merge the adapter into the "
                  "base (PEFT merge_and_unload) and serve the merged model"),
    "mllama": ("MllamaForConditionalGeneration", False,
               "Llama 3.2 Vision is not in vLLM's supported-models list any more (its cross-attention "
               "encoder-decoder ran only on the removed V0 engine); serve it with SGLang or vlmchat itself"),
}
LORA_MODULES = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
VISION_PARTS = ("vision_tower", "vision_model", "visual", "multi_modal_projector", "connector", "vqmodel")


@dataclass(frozen=True)
class AdapterCheck:
    """One adapter against vLLM's loader: its rank and what vLLM would refuse or ignore."""

    name: str
    path: Path
    rank: int
    problems: tuple[str, ...] = ()   # vLLM refuses the adapter
    ignored: tuple[str, ...] = ()    # vLLM loads it but skips these weights


def check_for_vllm(name: str, path: Path) -> AdapterCheck:
    """What vLLM's LoRA loader would make of the adapter folder `path`."""
    from safetensors import safe_open

    problems, ignored = [], set()
    try:
        config = json.loads((path / CONFIG_FILE).read_text(encoding="utf-8"))
        with safe_open(str(path / WEIGHTS_FILE), framework="pt") as weights:
            keys = list(weights.keys())
    except Exception as exc:  # noqa: BLE001 - safetensors' own error for a damaged file among them
        return AdapterCheck(name, path, 0, (f"unreadable {CONFIG_FILE} or {WEIGHTS_FILE} ({exc})",))
    if config.get("peft_type", "LORA") != "LORA" or config.get("use_dora"):
        problems.append("not a plain LoRA (vLLM loads LoRA, not DoRA or other PEFT types)")
    if config.get("modules_to_save"):
        problems.append(f"modules_to_save {config['modules_to_save']} (fully trained layers) are not LoRA weights")
    for key in keys:
        parts = key.split(".")
        if parts[-1] != "weight" or parts[-2] not in ("lora_A", "lora_B"):
            problems.append(f"weight '{key}' is not a lora_A/lora_B matrix")
        elif any(part in VISION_PARTS for part in parts):
            ignored.add(".".join(parts[2:-2]))
        elif parts[-3] not in LORA_MODULES:
            problems.append(f"module '{parts[-3]}' ({key}) is not a LoRA-able layer of the language model")
    return AdapterCheck(name, path, int(config.get("r", 0)), tuple(dict.fromkeys(problems)), tuple(sorted(ignored)))


def handoff_text(settings: Settings, tensor_parallel: int = 1, nodes: int = 1, port: int = 8000) -> str:
    """The commands (and the settings entry) to serve the base and its adapters with vLLM or SGLang."""
    from ..errors import InputError
    from ..models.resolve import resolve_model

    if tensor_parallel < 1 or nodes < 1 or not 1 <= port <= 65535:
        raise InputError("--tensor-parallel and --nodes must be 1 or more, --port between 1 and 65535.")
    source = resolve_model(settings.model.id, settings)
    family = source.family()
    base = source.location
    checks = []
    for adapter in list_adapters(settings.paths.resolve("adapters")):  # broken or made for another base: not served
        unfit = incompatibility(adapter, source.model_id, str(source.location), "")
        checks.append(AdapterCheck(adapter.name, adapter.path, 0, (unfit,)) if unfit
                      else check_for_vllm(adapter.name, adapter.path))
    served = [c for c in checks if not c.problems]
    architecture, lora_ok, why = VLLM_FAMILIES.get(family, ("?", None, ""))
    lines = [f"# Base model: {base} (family {family or 'unknown'}; vLLM architecture {architecture})"]
    served_at_all = family not in VLLM_UNSERVED
    if not served_at_all:
        lines.append(f"# vLLM cannot serve this family: {why}.")
    elif lora_ok is False:
        lines.append(f"# vLLM cannot serve this family with LoRA: {why}.")
    elif lora_ok is None:
        lines.append("# This family is not in vlmchat's table; check vLLM's supported-models page for its LoRA column.")
    if why and lora_ok:
        lines.append(f"# Note for this family: {why}.")
    lines += _adapter_lines(checks)
    if served_at_all:
        lines += ["", *_vllm_lines(base, source.model_id, served if lora_ok is not False else [], tensor_parallel,
                                   nodes, port, pipeline=NO_PIPELINE not in why)]
    lines += ["", *_sglang_lines(base, source.model_id, served, tensor_parallel, nodes)]
    lines += ["", *_training_lines(tensor_parallel, nodes)]
    lines += ["", "# Then use it from vlmchat: add to settings.toml and choose endpoint:cluster (Chat, Caption, "
                  "Compare, Eval; --endpoint cluster on the command line):",
              "[endpoints.cluster]", f'base_url = "http://HEAD_NODE:{port}/v1"',
              f'model = "{served[0].name if served else source.model_id}"   # an adapter\'s name, or the base\'s',
              "max_concurrency = 32"]
    return "\n".join(lines)


def _adapter_lines(checks: list[AdapterCheck]) -> list[str]:
    lines = []
    for check in checks:
        if check.problems:
            lines.append(f"# adapter {check.name}: vLLM would refuse it: {'; '.join(check.problems[:3])}")
        elif check.ignored:
            lines.append(f"# adapter {check.name}: loads, but vLLM skips its {len(check.ignored)} vision-tower/"
                         "projector modules (it adds LoRA to the language model only); retrain with targets = \"language\"")
        else:
            lines.append(f"# adapter {check.name}: OK for vLLM (rank {check.rank}, language-model layers only)")
    return lines or ["# no adapters in the adapters folder"]


def _vllm_lines(base: str, served_name: str, adapters: list[AdapterCheck], tensor_parallel: int, nodes: int,
                port: int, pipeline: bool = True) -> list[str]:
    """`pipeline`: the family runs pipeline parallel across nodes; otherwise tensor parallel spans them all."""
    spread = tensor_parallel if pipeline else tensor_parallel * nodes
    command = ["vllm", "serve", base, "--served-model-name", served_name, "--port", str(port),
               "--tensor-parallel-size", str(spread)]
    if nodes > 1:
        command += (["--pipeline-parallel-size", str(nodes)] if pipeline else []) + [
            "--distributed-executor-backend", "ray"]
    if adapters:
        command += ["--enable-lora", "--max-lora-rank", str(_rank_limit(max(a.rank for a in adapters))),
                    "--max-loras", str(min(len(adapters), 8)), "--lora-modules",
                    *[f"{a.name}={a.path}" for a in adapters]]
    lines = ["# vLLM: one machine, --tensor-parallel-size = its GPUs" if nodes == 1 else
             f"# vLLM on {nodes} nodes: start a Ray cluster first (`ray start --head` on the first node, "
             "`ray start --address=HEAD_NODE:6379` on the others; same paths on every node), then on the head node "
             + ("(tensor parallel inside a node, pipeline parallel across nodes):" if pipeline else
                "(this family has no pipeline parallelism: tensor parallel over every GPU of every node):")]
    return lines + [_shell(command)]


def _sglang_lines(base: str, served_name: str, adapters: list[AdapterCheck], tensor_parallel: int,
                  nodes: int) -> list[str]:
    command = ["python", "-m", "sglang.launch_server", "--model-path", base, "--served-model-name", served_name,
               "--port", "30000", "--tp-size", str(tensor_parallel * nodes)]
    if nodes > 1:
        command += ["--nnodes", str(nodes), "--node-rank", "0", "--dist-init-addr", "HEAD_NODE:50000"]
    if adapters:
        command += ["--enable-lora", "--lora-paths", *[f"{a.name}={a.path}" for a in adapters]]
    note = "" if nodes == 1 else " (run it on every node with its own --node-rank)"
    return [f"# SGLang{note}; its LoRA support per model is listed in its docs:", _shell(command)]


def _training_lines(gpus: int, nodes: int) -> list[str]:
    """Fine-tuning over `gpus` GPUs on each of `nodes` machines: which strategy, and how to launch it."""
    from ..finetune.distributed import launch_lines

    total = gpus * nodes
    command = ["python3", "launch.py", "finetune", "--data", "DATA", "--name", "NAME", "--num-processes",
               str(total) if total > 1 else "GPUS", "--distributed", "fsdp"] + (["--write-job"] if nodes > 1 else [])
    lines = ["# Fine-tuning beyond one GPU: --distributed ddp (the default) when the model fits one GPU (each GPU "
             "holds all of it; fastest); fsdp when it does not (weights, gradients and AdamW state sharded over "
             "the GPUs, one decoder layer gathered at a time):", shlex.join(command)]
    if nodes > 1:
        lines += ["# --write-job writes the job folder JOB without starting it. The project, model, dataset, "
                  "adapters folder and JOB must be at the same paths on every machine (a shared filesystem).",
                  *launch_lines("JOB/job.json", total, nodes)]
    return lines


def _rank_limit(rank: int) -> int:
    """The smallest value vLLM accepts for --max-lora-rank that holds `rank`."""
    return next((size for size in (8, 16, 32, 64, 128, 256, 320, 512) if size >= rank), rank)


def _shell(command: list[str]) -> str:
    """A copyable command line, broken after each flag's value."""
    text = shlex.join(command)
    return text.replace(" --", " \\\n    --")
