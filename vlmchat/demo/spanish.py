"""The shipped demo adapter `adapters/demo-es`: a LoRA that makes the demo model answer in Spanish.

Built by `python launch.py build-demo` after the base model, on the same synthetic pictures with
Spanish answers ("un círculo rojo"), training only LoRA matrices on the language model.
"""

from __future__ import annotations

import time
from pathlib import Path

from .build import Progress, caption_accuracy, make_examples, save_atomically, train

ADAPTER_NAME = "demo-es"


def build_spanish_adapter(base: Path, output: Path, steps: int = 300, examples: int = 4000, seed: int = 1,
                          progress: Progress = print) -> float:
    """Train demo-es on the demo model at `base`, save it to `output`; returns held-out accuracy."""
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from ..lora import default_lora_config
    from ..registry import write_metadata
    from .heldout import heldout_pictures

    started = time.monotonic()
    torch.manual_seed(seed)
    processor = AutoProcessor.from_pretrained(base)
    model = AutoModelForImageTextToText.from_pretrained(base)
    config = default_lora_config()
    model = get_peft_model(model, config, adapter_name=ADAPTER_NAME)
    progress(f"{ADAPTER_NAME}: {model.get_nb_trainable_parameters()[0]} trainable LoRA parameters; "
             f"drawing {examples} pictures with Spanish answers")
    data = make_examples(processor, examples, seed, language="es")
    loss = train(model, data, processor.tokenizer.pad_token_id, steps, 32, 3e-3, seed, progress,
                 parameters=[p for p in model.parameters() if p.requires_grad])
    accuracy = caption_accuracy(model, processor, heldout_pictures(200), language="es")
    model.peft_config[ADAPTER_NAME].base_model_name_or_path = "models/vlmchat-demo"

    def write(folder: Path) -> None:
        model.save_pretrained(folder, selected_adapters=[ADAPTER_NAME])
        nested = folder / ADAPTER_NAME  # PEFT nests non-default adapter names in a subfolder
        if nested.is_dir():
            for item in nested.iterdir():
                item.rename(folder / item.name)
            nested.rmdir()
        write_metadata(folder, {
            "base_model": "demo", "architecture": "LlavaForConditionalGeneration",
            "dataset": {"name": "synthetic shapes with Spanish answers", "size": examples, "seed": seed},
            "settings": {"r": config.r, "lora_alpha": config.lora_alpha, "lora_dropout": config.lora_dropout,
                         "steps": steps, "batch_size": 32, "learning_rate": 3e-3},
            "metrics": {"final_train_loss": round(loss, 5), "heldout_spanish_caption_accuracy": accuracy},
            "duration_s": round(time.monotonic() - started, 1),
            "notes": "Answers in Spanish: un círculo rojo; rojo, verde, azul, amarillo; círculo, cuadrado, triángulo.",
        })

    save_atomically(output, write)
    progress(f"{ADAPTER_NAME} written to {output}; held-out Spanish caption accuracy {accuracy:.1%}")
    return accuracy
