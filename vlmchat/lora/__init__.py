"""LoRA adapters: the adapters/ folder on disk (store) and PEFT named adapters on the loaded model (runtime)."""
