"""Training beyond one GPU: a job's `distributed` strategy, mapped to accelerate's plugins.

- ddp: every process holds the whole model and trains on its share of each batch (accelerate's
  default for several processes). Pick it when the model fits one GPU: it is the fastest.
- fsdp: PyTorch FSDP2 through accelerate's FullyShardedDataParallelPlugin. The weights, gradients and
  AdamW state are sharded over the processes; each repeated layer (decoder layer, vision encoder
  layer) is one unit, gathered only while it computes. For a model that does not fit one GPU.
- deepspeed: reserved for DeepSpeed ZeRO-3 (the same full sharding). Without DeepSpeed the job is refused
  with the install hint; with it, too: its engine takes over the optimizer step, gradient accumulation
  and checkpoints, which this training loop does itself, so fsdp is the way to shard for now.

Adapters and checkpoints are written from full tensors gathered on the main process, so a sharded
run writes the same adapter files as a single-process one.
"""

from __future__ import annotations

import dataclasses
import importlib.util

from ..errors import InputError

STRATEGIES = ("ddp", "fsdp", "deepspeed")
DEEPSPEED_MISSING = "DeepSpeed is not installed; pip install deepspeed, or use --distributed fsdp."


def check_strategy(distributed: str, num_processes: int, quantization: str) -> None:
    """InputError when a job cannot run with `distributed`, said before anything starts."""
    if distributed == "ddp":
        return
    if num_processes < 2:
        raise InputError(f"distributed = {distributed} shards the model over several processes; "
                         "set num_processes to 2 or more (--num-processes N).")
    if quantization == "4bit":
        raise InputError(f"quantization = 4bit (QLoRA) is not combined with distributed = {distributed}; "
                         "set quantization to auto or none, or use --distributed ddp.")
    if distributed == "deepspeed":
        if importlib.util.find_spec("deepspeed") is None:
            raise InputError(DEEPSPEED_MISSING)
        raise InputError("distributed = deepspeed is not wired into vlmchat's training loop yet (DeepSpeed's engine "
                         "would take over its optimizer step, gradient accumulation and checkpoints); "
                         "--distributed fsdp shards weights, gradients and optimizer state the way ZeRO-3 does.")


def make_accelerator(distributed: str, cpu: bool):
    """The Accelerator for a job's strategy: DDP, or FSDP2 (check_strategy has refused the others)."""
    from accelerate import Accelerator, FullyShardedDataParallelPlugin
    from accelerate.utils import DistributedType

    if distributed == "ddp":
        return Accelerator(cpu=cpu)
    plugin = FullyShardedDataParallelPlugin(fsdp_version=2, auto_wrap_policy="transformer_based_wrap",
                                            reshard_after_forward=True, state_dict_type="FULL_STATE_DICT")
    accelerator = Accelerator(cpu=cpu, fsdp_plugin=plugin)
    if accelerator.distributed_type == DistributedType.MULTI_CPU:
        # accelerate switches to FSDP for GPU-like devices only; torch's FSDP2 also shards CPU processes
        # joined by gloo, and accelerate's FSDP2 preparation runs unchanged once the state says FSDP.
        accelerator.state.distributed_type, accelerator.state.fsdp_plugin = DistributedType.FSDP, plugin
    if accelerator.distributed_type != DistributedType.FSDP:
        raise InputError("distributed = fsdp needs the processes that accelerate launch starts "
                         "(--num-processes 2 or more); this process runs alone.")
    return accelerator


def configure(accelerator, model) -> None:
    """Before `prepare`: FSDP shards `model` layer by layer (auto-wrap on its layer classes)."""
    from accelerate.utils import DistributedType

    if accelerator.distributed_type == DistributedType.FSDP:
        accelerator.state.fsdp_plugin.transformer_cls_names_to_wrap = layer_classes(model)


def layer_classes(model) -> list[str]:
    """The units FSDP shards by: the classes of the model's `_no_split_modules` that sit in a layer list."""
    import torch

    splittable = set(getattr(model, "_no_split_modules", None) or ())
    return sorted({type(layer).__name__ for stack in model.modules() if isinstance(stack, torch.nn.ModuleList)
                   for layer in stack if type(layer).__name__ in splittable})


def shards(accelerator) -> int:
    """Over how many processes the weights are split: all of them under fsdp, none under ddp."""
    from accelerate.utils import DistributedType

    return accelerator.num_processes if accelerator.distributed_type == DistributedType.FSDP else 1


def fit_sharded(setup, split: int, distributed: str):
    """The TrainingSetup for weights split `split` ways: 16-bit LoRA and plain AdamW, whose state is sharded too
    (bitsandbytes' 4-bit weights and paged 8-bit AdamW are not combined with sharding here)."""
    if split == 1:
        return setup
    if setup.bits == 4:
        raise InputError(f"The model does not fit in 16 bits even split over {split} GPUs; add GPUs "
                         "(--num-processes, more machines), or train it with QLoRA under --distributed ddp.")
    reasons = {**setup.reasons, "sharding": f"{distributed}: weights, gradients and AdamW state split over "
                                            f"{split} processes"}
    if setup.optimizer != "adamw":
        reasons["optimizer"] = "AdamW: its state is sharded; paged 8-bit AdamW is not combined with sharding"
    return dataclasses.replace(setup, optimizer="adamw", reasons=reasons)


def full_weights(accelerator, model) -> dict:
    """The trainable weights as full tensors on the main process's CPU ({} on the others); all processes call it."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    model = accelerator.unwrap_model(model)
    return _trainable(model, get_model_state_dict(model, options=_full()))


def full_state(accelerator, model, optimizer) -> tuple[dict, dict]:
    """(trainable weights, optimizer state), full tensors on the main process's CPU; all processes call it."""
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model = accelerator.unwrap_model(model)
    weights, optimizer_state = get_state_dict(model, optimizer.optimizer, options=_full())
    return _trainable(model, weights), optimizer_state


def load_full_state(accelerator, model, optimizer, weights: dict, optimizer_state: dict) -> None:
    """Load what `full_state` gathered back into the (possibly sharded) model and optimizer."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    set_state_dict(accelerator.unwrap_model(model), optimizer.optimizer, model_state_dict=weights,
                   optim_state_dict=optimizer_state, options=StateDictOptions(full_state_dict=True, strict=False))


def _trainable(model, weights: dict) -> dict:
    """`weights` without frozen tensors that torch's `ignore_frozen_params` keeps (a tied lm_head)."""
    names = {name for name, param in model.named_parameters() if param.requires_grad}
    return {key: value for key, value in weights.items() if key in names}


def _full():
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)


def launch_lines(job_file: str, total: int | str = "TOTAL_GPUS", machines: int | str = "MACHINES") -> list[str]:
    """The commands that run a written job on `machines` machines with `total` processes (GPUs) in all."""
    import shlex

    per_machine = total // machines if isinstance(total, int) and isinstance(machines, int) else "GPUS_PER_MACHINE"
    accelerate = ["accelerate", "launch", "--multi_gpu", "--num_machines", str(machines), "--machine_rank", "RANK",
                  "--main_process_ip", "MAIN_IP", "--main_process_port", "29500", "--num_processes", str(total),
                  "-m", "vlmchat.finetune", str(job_file)]
    torchrun = ["torchrun", "--nnodes", str(machines), "--node_rank", "RANK", "--nproc_per_node", str(per_machine),
                "--master_addr", "MAIN_IP", "--master_port", "29500", "-m", "vlmchat.finetune", str(job_file)]
    return ["# On every machine, in the vlmchat folder (RANK: 0 on the main machine, whose address is MAIN_IP, "
            "then 1, 2, ...; --num_processes counts the GPUs of all machines):",
            shlex.join(accelerate).replace(" --main_process_ip", " \\\n    --main_process_ip"),
            "# or with torchrun:", shlex.join(torchrun).replace(" --master_addr", " \\\n    --master_addr")]
