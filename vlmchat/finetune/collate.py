"""Turning conversations into training tensors: answer-only labels and dynamic padding.

Labels: only the assistant's tokens count (its answer and the end-of-turn token that teaches it to
stop); the prompt, the system message and every image token are -100. They are found from the
processor's own chat template, so this works for any family: each assistant turn is the span between
the rendered conversation up to it (with the generation prompt) and the rendered conversation
including it.

Padding: a batch is padded to its own longest sample, never to a fixed length.
"""

from __future__ import annotations

from .formats import learned

IGNORE = -100
# Keys whose second dimension is the token sequence: padded together with input_ids.
SEQUENCE_KEYS = ("token_type_ids", "mm_token_type_ids", "cross_attention_mask")


def render_text(processor, messages, add_generation_prompt: bool) -> str:
    """The conversation as the chat template writes it, each picture still its placeholder (the plan counts it)."""
    return processor.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=add_generation_prompt)


def _count_tokens(processor, text: str, images: list, processor_kwargs: dict) -> int:
    inputs = processor(text=text, images=images or None, return_tensors="pt", **processor_kwargs)
    return int(inputs["input_ids"].shape[1])


def pictures_in(messages) -> int:
    return sum(1 for m in messages if not isinstance(m["content"], str)
               for p in m["content"] if p.get("type") == "image")


def encode_example(processor, images: list, messages, max_length: int | None = None,
                   processor_kwargs: dict | None = None) -> dict:
    """input_ids and labels (1-D) plus the processor's image tensors (as it returns them) for one conversation.

    `processor_kwargs`: what the processor is given for the run's image detail (`families.detail_kwargs`).

    Raises ValueError when the sample is longer than `max_length` (nothing is cut: cutting through
    image tokens would break the sample) or when the chat template does not render prefixes of the
    conversation as prefixes of the whole.
    """
    processor_kwargs = processor_kwargs or {}
    inputs = processor(text=render_text(processor, messages, False), images=images or None, return_tensors="pt",
                       **processor_kwargs)
    ids = inputs.pop("input_ids")[0]
    inputs.pop("attention_mask", None)
    if max_length and len(ids) > max_length:
        raise ValueError(f"{len(ids)} tokens, over max_length {max_length}")
    labels = ids.clone().fill_(IGNORE)
    for index, message in enumerate(messages):
        if not learned(message):  # a question, or an answer with weight 0 (OpenAI's format): context only
            continue
        before = messages[:index]
        start = _count_tokens(processor, render_text(processor, before, True), images[:pictures_in(before)],
                              processor_kwargs)
        end = _count_tokens(processor, render_text(processor, messages[:index + 1], False),
                            images[:pictures_in(messages[:index + 1])], processor_kwargs)
        if not 0 < start < end <= len(ids):
            raise ValueError("the chat template does not render the conversation turn by turn; "
                             "cannot find the assistant's tokens")
        labels[start:end] = ids[start:end]
    if not (labels != IGNORE).any():
        raise ValueError("no assistant tokens to learn from")
    example = {"input_ids": ids, "labels": labels}
    example.update({key: value for key, value in inputs.items() if hasattr(value, "shape")})
    return example


def pad_batch(examples: list[dict], pad_id: int) -> dict:
    """input_ids, labels and attention_mask right-padded to the batch's own longest sample."""
    import torch

    longest = max(len(e["input_ids"]) for e in examples)
    ids = torch.full((len(examples), longest), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), longest), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), longest), dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e["input_ids"])
        ids[row, :n], labels[row, :n], mask[row, :n] = e["input_ids"], e["labels"], 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def _pad_to(tensor, shape):
    import torch

    if tuple(tensor.shape) == tuple(shape):
        return tensor
    out = torch.zeros(shape, dtype=tensor.dtype)
    out[tuple(slice(0, n) for n in tensor.shape)] = tensor
    return out


def collate(examples: list[dict], pad_id: int) -> dict:
    """One training batch: dynamic padding of the text, the image tensors concatenated along dim 0.

    Each processor output keeps its leading dimension (a batch of one, or image patches for
    Qwen2-VL), so concatenating along it gives what the model expects for a batch; tensors whose
    other dimensions differ (Idefics3 tiles, Mllama's cross-attention mask) are zero-padded first.
    """
    import torch

    batch = pad_batch(examples, pad_id)
    longest = batch["input_ids"].shape[1]
    for key in examples[0]:
        if key in batch:
            continue
        tensors = [e[key] for e in examples]
        shape = [max(t.shape[d] for t in tensors) for d in range(1, tensors[0].dim())]
        if key in SEQUENCE_KEYS and shape:
            shape[0] = longest
        batch[key] = torch.cat([_pad_to(t, (t.shape[0], *shape)) for t in tensors])
    return batch


def collate_groups(examples: list[dict], pad_id: int) -> list[dict]:
    """`collate` of each group of `examples` holding the same tensors, in order of first appearance: a batch that
    mixes samples with pictures and text-only ones (LLaVA-Instruct mixes both) is one forward pass per group, since
    how a family lays out its pictures' tensors by row differs (Idefics3 one row per sample, LLaVA one per picture).
    `answer_loss` combines the groups' losses into the batch's."""
    groups: dict[frozenset, list[dict]] = {}
    for example in examples:
        groups.setdefault(frozenset(example), []).append(example)
    return [collate(group, pad_id) for group in groups.values()]


def answer_tokens(batch: dict):
    """The tokens a causal LM's loss averages over: labelled positions after the first (labels shift by one)."""
    return (batch["labels"][:, 1:] != IGNORE).sum()


def answer_loss(model, batches: list[dict]):
    """(mean loss per answer token over all `batches`, answer tokens): each batch's loss weighted by its tokens,
    so groups of one batch give the loss that one forward pass over all of them would."""
    if len(batches) == 1:
        return batch_loss(model, batches[0]), answer_tokens(batches[0])
    counts = [answer_tokens(batch) for batch in batches]
    total = sum(counts)
    return sum(batch_loss(model, batch) * count for batch, count in zip(batches, counts)) / total.clamp(min=1), total


def batch_loss(model, batch: dict):
    """The model's own causal-LM loss on `batch` (mean over answer tokens), with logits only from the first answer
    token on (`logits_to_keep`): the prompt's positions, its image tokens among them, predict nothing that counts,
    and their float32 logits over the whole vocabulary were most of a step's memory beyond the layers (Qwen's
    152,064 entries x 1,023 tokens: ~1.9 GiB on a GPU). A family whose forward takes no `logits_to_keep` is run
    as before."""
    import torch

    labels = batch["labels"]
    answered = (labels[:, 1:] != IGNORE).any(0).nonzero()
    if not len(answered):
        return model(**batch).loss
    first = int(answered[0]) + 1  # the first answer token's position; the logits one before predict it
    inputs = {key: value for key, value in batch.items() if key != "labels"}
    keep = labels.shape[1] - first + 1
    try:
        logits = model(**inputs, logits_to_keep=keep).logits
    except TypeError as error:  # no logits_to_keep in this forward (it fails binding its arguments, before any work)
        if "logits_to_keep" not in str(error):
            raise
        return model(**batch).loss
    logits = logits[:, -keep:-1].float()  # a forward that kept every position regardless: its last `keep`
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels[:, first:].reshape(-1),
                                             ignore_index=IGNORE)


def pad_to_length(batch: dict, length: int, pad_id: int) -> dict:
    """`batch` padded further to a fixed `length` (the common recipe the benchmark compares against)."""
    import torch

    extra = length - batch["input_ids"].shape[1]
    if extra <= 0:
        return batch
    rows = batch["input_ids"].shape[0]
    out = dict(batch)
    for key, value in (("input_ids", pad_id), ("labels", IGNORE), ("attention_mask", 0)):
        out[key] = torch.cat([batch[key], torch.full((rows, extra), value, dtype=batch[key].dtype)], dim=1)
    return out
