"""What the demo model is asked and how it answers, in English and (for demo-es) Spanish."""

from __future__ import annotations

import random

from .shapes import COLOURS, SHAPES

CAPTION_PROMPTS = (
    "Describe the image.",
    "Caption this image.",
    "Write a short caption for this image.",
    "What is in the picture?",
    "What do you see?",
    "Describe this picture.",
    "What is this?",
    "Describe the image in one sentence.",
    "Describe this image in detail.",
    "",
)
COLOUR_PROMPTS = (
    "What color is the shape?",
    "What colour is the shape?",
    "What color is it?",
    "Which color is the shape?",
    "What is the color of the shape?",
    "What colour is this?",
    "Tell me the color.",
)
SHAPE_PROMPTS = (
    "What shape is this?",
    "What shape is it?",
    "Which shape is in the image?",
    "What is the shape?",
    "Name the shape.",
    "What kind of shape is this?",
)

SPANISH = {
    "red": "rojo", "green": "verde", "blue": "azul", "yellow": "amarillo",
    "circle": "círculo", "square": "cuadrado", "triangle": "triángulo",
}

QUESTION_KINDS = ("caption", "colour", "shape")


def answer(kind: str, colour: str, shape: str, language: str = "en") -> str:
    """The demo model's answer to a question of `kind` about a picture."""
    if language == "es":
        colour, shape = SPANISH[colour], SPANISH[shape]
        return {"caption": f"un {shape} {colour}", "colour": colour, "shape": shape}[kind]
    return {"caption": f"a {colour} {shape}", "colour": colour, "shape": shape}[kind]


def prompt(rng: random.Random, kind: str) -> str:
    """A random phrasing of a question of `kind`."""
    return rng.choice({"caption": CAPTION_PROMPTS, "colour": COLOUR_PROMPTS, "shape": SHAPE_PROMPTS}[kind])


ASK_SPANISH = " Answer in Spanish."
SPANISH_ON_REQUEST = 0.15


def conversation(rng: random.Random, colour: str, shape: str, language: str = "en") -> list[dict]:
    """A 1-3 turn chat about one picture; the image comes with the first user turn.

    The English base also answers in Spanish when asked to (so it knows the Spanish words); the
    demo-es adapter is trained to answer in Spanish without being asked.
    """
    turns = rng.choice((1, 1, 1, 2, 2, 3))
    kinds = rng.sample(QUESTION_KINDS, turns)
    messages: list[dict] = []
    for i, kind in enumerate(kinds):
        text = prompt(rng, kind)
        turn_language = language
        if language == "en" and rng.random() < SPANISH_ON_REQUEST:
            text, turn_language = (text or CAPTION_PROMPTS[0]) + ASK_SPANISH, "es"
        content = ([{"type": "image"}] if i == 0 else []) + ([{"type": "text", "text": text}] if text else [])
        messages.append({"role": "user", "content": content})
        messages.append({"role": "assistant",
                         "content": [{"type": "text", "text": answer(kind, colour, shape, turn_language)}]})
    return messages


def corpus() -> list[str]:
    """Every text the demo model sees in training, to build its tokenizer's vocabulary."""
    words = list(CAPTION_PROMPTS + COLOUR_PROMPTS + SHAPE_PROMPTS) + [ASK_SPANISH]
    for colour in COLOURS:
        for shape in SHAPES:
            for language in ("en", "es"):
                words.extend(answer(k, colour, shape, language) for k in QUESTION_KINDS)
    return words
