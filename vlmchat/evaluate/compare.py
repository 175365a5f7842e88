"""Side-by-side answers of the base model and adapters on one loaded model, and the votes on them.

Both sides run on the same base weights (PEFT named adapters switched per request, base = all
adapters disabled), with the same seed, so the only difference is the adapter.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Iterator

from ..errors import InputError
from ..models.manager import GenerationParams, ModelManager

VOTES = ("left", "right", "tie", "both bad")
_vote_lock = threading.Lock()


def _question(image, prompt: str) -> list[dict]:
    content = ([{"type": "image", "image": image}] if image is not None else []) + \
              ([{"type": "text", "text": prompt}] if prompt.strip() else [])
    if not content:
        raise InputError("Give an image, a prompt, or both.")
    return [{"role": "user", "content": content}]


def compare_stream(manager: ModelManager, image, prompt: str, left: str, right: str,
                   params: GenerationParams = GenerationParams(), stop: threading.Event | None = None,
                   ) -> Iterator[tuple[str, str]]:
    """Yield (left_text, right_text) as the left side streams, then the right side."""
    messages = _question(image, prompt)
    left_text = right_text = ""
    for left_text in manager.stream(messages, params, stop, adapter=left):
        yield left_text, right_text
    for right_text in manager.stream(messages, params, stop, adapter=right):
        yield left_text, right_text
    yield left_text.strip(), right_text.strip()


def record_vote(log: Path, vote: str, record: dict) -> dict:
    """Append one vote with its inputs, outputs and settings as a JSON line; returns the entry."""
    if vote not in VOTES:
        raise InputError(f"A vote is one of: {', '.join(VOTES)}.")
    if not record.get("left_text") and not record.get("right_text"):
        raise InputError("Run a comparison before voting.")
    entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "vote": vote, **record}
    if isinstance(entry.get("params"), GenerationParams):
        entry["params"] = asdict(entry["params"])
    line = json.dumps(entry, ensure_ascii=False) + "\n"
    log.parent.mkdir(parents=True, exist_ok=True)
    with _vote_lock, open(log, "a", encoding="utf-8") as out:
        out.write(line)
    return entry
