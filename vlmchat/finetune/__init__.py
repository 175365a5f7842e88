"""Fine-tuning LoRA adapters on the user's own images, in a child process the UI and CLI watch.

- datasets.py  the three dataset formats, read and checked row by row (file/line problems)
- collate.py   answer-only labels and dynamic padding
- spec.py      the job spec (job.json) built from settings.toml's [finetune] and the user's changes
- setup.py     precision / QLoRA / gradient checkpointing / optimizer for this machine, with reasons
- model.py     loading the base model for training and wrapping it with LoRA
- batches.py   which samples each step and process reads (resumable, data-parallel)
- loop.py      the accelerate training loop, eval, early stopping, checkpoints
- output.py    the finished adapter written atomically into adapters/<name>/
- job.py       the child process: `python -m vlmchat.finetune job.json [--resume]`
- progress.py  progress.jsonl: events written by the child, folded into a JobStatus by readers
- runner.py    starting, watching, cancelling and resuming jobs from the UI or CLI process

Nothing here imports torch at module level; the UI process never trains.
"""
