"""Side-by-side answers of the base model and adapters on one loaded model, and the votes on them.

Both sides run on the same base weights (PEFT named adapters switched per request, base = all
adapters disabled), with the same seed, so the only difference is the adapter.

Votes: one per comparison. Each comparison gets an id; voting again on the same comparison replaces
its vote. The log (JSON lines, rewritten atomically) keeps with each vote the picture's sha256, the
prompt, both sides' names and answers, the seed, the model and the times; `tally` counts wins,
losses and ties per side.
"""

from __future__ import annotations

import json
import secrets
import threading
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from ..errors import InputError, VlmchatError
from ..files import sha256_of, write_text_atomic
from ..models.answers import EMPTY_ANSWER, Answer, is_endpoint
from ..models.manager import GenerationParams, ModelManager

VOTES = ("left", "right", "tie", "both bad")
TALLY_HEADERS = ["side", "votes", "wins", "losses", "ties", "both bad"]
NO_IMAGE = "Compare needs a picture: upload one (or click an example), then press Compare."
_vote_lock = threading.Lock()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _question(image, prompt: str) -> list[dict]:
    if image is None:
        raise InputError(NO_IMAGE)
    content = [{"type": "image", "image": image}] + ([{"type": "text", "text": prompt}] if prompt.strip() else [])
    return [{"role": "user", "content": content}]


def compare_stream(manager: ModelManager, image, prompt: str, left: str, right: str,
                   params: GenerationParams = GenerationParams(), stop: threading.Event | None = None,
                   ) -> Iterator[tuple[Answer, Answer]]:
    """Yield (left, right) Answers as the left side streams, then the right side; the last pair is finished,
    each with its latency, tokens and (for a priced endpoint) cost."""
    messages = _question(image, prompt)
    left_answer, right_answer = Answer("", left, done=False), Answer("", right, done=False)
    for left_answer in _side(manager, messages, params, stop, left):
        yield left_answer, right_answer
    for right_answer in _side(manager, messages, params, stop, right):
        yield left_answer, right_answer


def _side(manager: ModelManager, messages, params, stop, adapter: str) -> Iterator[Answer]:
    """One side's answer as it streams; a side that fails ends in an Answer saying why (finish_reason "error"),
    so the other side's answer stays (an endpoint that was down lost the local side's finished answer)."""
    answer = None
    try:
        for answer in manager.stream_answer(messages, params, stop, adapter=adapter):
            yield answer
    except VlmchatError as exc:
        yield Answer(f"⚠️ {exc}", adapter, finish_reason="error")
        return
    if answer is not None and answer.done and not answer.text.strip() and not (stop and stop.is_set()):
        # said as Chat says it (an endpoint's "" answer was an empty cell, blind tester)
        yield replace(answer, text=f"⚠️ {EMPTY_ANSWER}", finish_reason="error")


def figures(answer: Answer) -> str:
    """One side's cost in a few words: seconds, tokens, tokens/s, and dollars where the endpoint has a price."""
    parts = [f"{answer.latency_s:.2f} s"]
    if answer.completion_tokens:
        parts.append(f"{answer.completion_tokens} tokens")
    if answer.tokens_per_s:
        parts.append(f"{answer.tokens_per_s:.1f} tokens/s")
    if answer.cost_usd is not None:
        parts.append(f"${answer.cost_usd:.6f}")
    elif is_endpoint(answer.model):  # a local model costs nothing to ask ("no price set" puzzled a tester)
        counted = answer.prompt_tokens is not None and answer.completion_tokens is not None
        parts.append("no price set for this endpoint" if counted else "no cost: the server reported no token counts")
    return f"**{answer.model or 'base'}**: " + ", ".join(parts)


def new_comparison(image_path: str | Path, prompt: str, left: str, right: str, seed: int, **settings) -> dict:
    """The record of one comparison (its answers are added when they are done): a fresh id, the picture's
    sha256 and name, the prompt, both sides, the seed and `settings` (model, max_new_tokens, ...)."""
    return {"comparison": secrets.token_hex(8), "compared": _now(), "image_sha256": sha256_of(image_path),
            "image_name": Path(image_path).name, "prompt": prompt, "left": left, "right": right, "seed": seed,
            **settings}


def read_votes(log: Path) -> list[dict]:
    """Every vote in the log (lines that are not JSON objects are skipped)."""
    votes = []
    try:
        lines = Path(log).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            votes.append(entry)
    return votes


def record_vote(log: Path, vote: str, record: dict) -> dict:
    """Store `vote` on the comparison `record` (from `new_comparison`, with its answers); a vote already
    stored for the same comparison is replaced. Returns the stored entry."""
    if vote not in VOTES:
        raise InputError(f"A vote is one of: {', '.join(VOTES)}.")
    if not record or not record.get("comparison") or "left_text" not in record:
        raise InputError("Run a comparison (and let it finish) before voting.")
    entry = {"time": _now(), "vote": vote, **record}
    with _vote_lock:
        kept = [v for v in read_votes(log) if v.get("comparison") != record["comparison"]]
        lines = [json.dumps(v, ensure_ascii=False) for v in kept + [entry]]
        write_text_atomic(Path(log), "\n".join(lines) + "\n", private=True)
    return entry


def tally(votes: list[dict]) -> list[list]:
    """Rows of TALLY_HEADERS, one per side (base or adapter), most wins over losses first.

    A comparison of a side with itself counts for nothing."""
    counts: dict[str, dict[str, int]] = {}
    for vote in votes:
        left, right, choice = vote.get("left"), vote.get("right"), vote.get("vote")
        if not left or not right or left == right or choice not in VOTES:
            continue
        rows = [counts.setdefault(side, dict.fromkeys(TALLY_HEADERS[1:], 0)) for side in (left, right)]
        for row in rows:
            row["votes"] += 1
        if choice in ("left", "right"):
            winner, loser = rows if choice == "left" else rows[::-1]
            winner["wins"] += 1
            loser["losses"] += 1
        else:
            for row in rows:
                row["ties" if choice == "tie" else "both bad"] += 1
    ordered = sorted(counts.items(), key=lambda item: (item[1]["losses"] - item[1]["wins"], item[0]))
    return [[side, *row.values()] for side, row in ordered]
