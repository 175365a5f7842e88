"""Fine-tuning LoRA adapters on the user's own images, in a child process the UI and CLI watch.

- datasets.py  reading a dataset file or folder and checking it row by row (file/line problems)
- formats.py   the layouts (caption folder, imagefolder, ShareGPT, LLaVA, OpenAI messages, caption output)
- recipe.py    the auto schedule: steps, batch and learning rate from the data, the preset and the model
- plan.py      what a run will do before it starts (samples, steps, minutes, peak memory)
- collate.py   answer-only labels and dynamic padding
- spec.py      the job spec (job.json): [finetune]'s hyperparameters plus what and where
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
