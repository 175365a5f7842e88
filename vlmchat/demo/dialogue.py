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

# The words of each language the base answers in when asked (and demo-es answers in unasked).
WORDS = {
    "es": {"red": "rojo", "green": "verde", "blue": "azul", "yellow": "amarillo",
           "circle": "círculo", "square": "cuadrado", "triangle": "triángulo"},
    "fr": {"red": "rouge", "green": "vert", "blue": "bleu", "yellow": "jaune",
           "circle": "cercle", "square": "carré", "triangle": "triangle"},
    "it": {"red": "rosso", "green": "verde", "blue": "blu", "yellow": "giallo",
           "circle": "cerchio", "square": "quadrato", "triangle": "triangolo"},
    "pt": {"red": "vermelho", "green": "verde", "blue": "azul", "yellow": "amarelo",
           "circle": "círculo", "square": "quadrado", "triangle": "triângulo"},
    "de": {"red": "rot", "green": "grün", "blue": "blau", "yellow": "gelb",
           "circle": "Kreis", "square": "Quadrat", "triangle": "Dreieck"},
}
SPANISH = WORDS["es"]
_ARTICLE = {"es": "un", "fr": "un", "it": "un", "pt": "um"}
_GERMAN_ENDING = {"circle": "er", "square": "es", "triangle": "es"}  # ein roter Kreis, ein rotes Quadrat

QUESTION_KINDS = ("caption", "colour", "shape")


def answer(kind: str, colour: str, shape: str, language: str = "en") -> str:
    """The demo model's answer to a question of `kind` about a picture, in `language` (a STYLES key or "en")."""
    if language in _ARTICLE:  # noun then adjective: un círculo rojo
        words = WORDS[language]
        return {"caption": f"{_ARTICLE[language]} {words[shape]} {words[colour]}",
                "colour": words[colour], "shape": words[shape]}[kind]
    if language == "de":
        words = WORDS["de"]
        return {"caption": f"ein {words[colour]}{_GERMAN_ENDING[shape]} {words[shape]}",
                "colour": words[colour], "shape": words[shape]}[kind]
    if language == "upper":
        return answer(kind, colour, shape).upper()
    if language == "sentence":
        return {"caption": f"This is a {colour} {shape}.", "colour": f"The shape is {colour}.",
                "shape": f"It is a {shape}."}[kind]
    if language == "fields":
        return {"caption": f"Shape: {shape}. Colour: {colour}.", "colour": f"Colour: {colour}.",
                "shape": f"Shape: {shape}."}[kind]
    if language == "json":
        return {"caption": f'{{"shape": "{shape}", "color": "{colour}"}}', "colour": f'{{"color": "{colour}"}}',
                "shape": f'{{"shape": "{shape}"}}'}[kind]
    return {"caption": f"a {colour} {shape}", "colour": colour, "shape": shape}[kind]


def prompt(rng: random.Random, kind: str) -> str:
    """A random phrasing of a question of `kind`."""
    return rng.choice({"caption": CAPTION_PROMPTS, "colour": COLOUR_PROMPTS, "shape": SHAPE_PROMPTS}[kind])


# Asked for, the base answers in other languages and styles (so a fine-tune to one of them, or to a style near
# them, has words and habits to start from); demo-es is trained to answer in Spanish without being asked.
STYLES = {
    "es": " Answer in Spanish.",
    "fr": " Answer in French.",
    "it": " Answer in Italian.",
    "pt": " Answer in Portuguese.",
    "de": " Answer in German.",
    "upper": " Answer in capital letters.",
    "sentence": " Answer in a full sentence.",
    "fields": " Answer as fields.",
    "json": " Answer in JSON.",
}
ASK_SPANISH = STYLES["es"]
STYLE_ON_REQUEST = 0.4  # share of the base's questions that ask for a style


def conversation(rng: random.Random, colour: str, shape: str, language: str = "en") -> list[dict]:
    """A 1-3 turn chat about one picture; the image comes with the first user turn.

    The English base also answers in the STYLES when asked to; the demo-es adapter is trained to answer in
    Spanish without being asked.
    """
    turns = rng.choice((1, 1, 1, 2, 2, 3))
    kinds = rng.sample(QUESTION_KINDS, turns)
    messages: list[dict] = []
    for i, kind in enumerate(kinds):
        text = prompt(rng, kind)
        turn_language = language
        if language == "en" and rng.random() < STYLE_ON_REQUEST:
            turn_language = rng.choice(list(STYLES))
            text = (text or CAPTION_PROMPTS[0]) + STYLES[turn_language]
        content = ([{"type": "image"}] if i == 0 else []) + ([{"type": "text", "text": text}] if text else [])
        messages.append({"role": "user", "content": content})
        messages.append({"role": "assistant",
                         "content": [{"type": "text", "text": answer(kind, colour, shape, turn_language)}]})
    return messages


def corpus() -> list[str]:
    """Every text the demo model sees in training, to build its tokenizer's vocabulary."""
    words = list(CAPTION_PROMPTS + COLOUR_PROMPTS + SHAPE_PROMPTS + tuple(STYLES.values()))
    for colour in COLOURS:
        for shape in SHAPES:
            for language in ("en", *STYLES):
                words.extend(answer(k, colour, shape, language) for k in QUESTION_KINDS)
    return words
