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

# Asked for a detailed description or tags (the Caption tab's presets), the base writes the longer captions real
# captioners write, in the words they use ("The image shows a simple red circle on a white background.",
# "circle, red, simple, flat"), drawn from these parts. A user's own caption style is most often made of such
# words: a fine-tune to "A photo of a red circle." wrote "A ptoGREY a red circle." when the demo had never
# written "photo", and learns it now from 80 pictures with the defaults.
DETAIL_PROMPTS = ("Describe this image in detail.", "Describe the image in detail.",
                  "Give a detailed description of the image.", "Write a detailed caption for this image.",
                  "Write a long caption.")
TAG_PROMPTS = ("List tags for this image, separated by commas.", "Tag this image.", "Write tags for this picture.",
               "List keywords for this image.")
DETAIL_SHARE = 0.3  # share of the base's caption questions that ask for a detailed description or tags
OPENERS = ("A photo of", "A picture of", "An image of", "A drawing of", "An illustration of", "A photograph of",
           "The image shows", "This image shows", "The picture shows", "This picture shows", "There is",
           "In this image there is", "This is", "It is", "Here is", "We can see", "You can see")
ADJECTIVES = ("", "", "", "simple ", "single ", "bright ", "flat ", "plain ", "solid ")  # no size: it cannot see size
PLACES = ("", "", " on a white background", " on a plain background", " on a light background",
          " on a blank background", " in the center", " in the middle of the picture", " centered in the frame",
          " in the center of the image", " against a white background", " with nothing else in the picture")
TAGS = ("simple", "flat", "geometric", "shape", "minimal", "icon", "clipart", "vector", "white background",
        "centered", "solid color", "2d", "graphic", "drawing", "illustration", "plain background", "single object")


def detailed_caption(rng: random.Random, colour: str, shape: str) -> str:
    """A longer caption of the picture as captioners word them (random parts; the picture's colour and shape)."""
    ending = rng.choice((".", ".", ""))
    return f"{rng.choice(OPENERS)} a {rng.choice(ADJECTIVES)}{colour} {shape}{rng.choice(PLACES)}{ending}"


def tag_list(rng: random.Random, colour: str, shape: str) -> str:
    """Comma-separated tags: the shape, the colour (either order), then up to five more from TAGS."""
    first = [shape, colour] if rng.random() < 0.7 else [f"{colour} {shape}", shape, colour]
    return ", ".join(first + rng.sample(TAGS, rng.randint(0, 5)))


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


# Evaluate's multiple-choice question (the options, then the question): a real instruct model has seen exam
# questions and answers with the option's text as it is written there. The demo learns that from a share of its
# chats; before, it picked the right option of another generator's questions 44% of the time by log-likelihood
# when the options were capitalised or "a circle" or the question was worded in a way it had not seen.
CHOICE_SHARE = 0.25
OTHER_SHAPES = ("star", "hexagon", "oval", "rectangle", "pentagon", "diamond", "heart")
OTHER_COLOURS = ("purple", "orange", "black", "white", "pink", "brown", "grey")
CHOICE_PROMPTS = ("Which option matches the image?", "Choose the correct answer.", "Which one is it?",
                  "Pick the right option.", "")
OPTION_STYLES = ("plain", "plain", "capital", "upper", "article")


def _written(option: str, style: str) -> str:
    """An option as an eval set may write it: circle, Circle, CIRCLE, a circle / an oval."""
    if style == "upper":
        return option.upper()
    if style == "capital":
        return option[:1].upper() + option[1:]
    if style == "article" and " " not in option:
        return ("an " if option[0] in "aeiou" else "a ") + option
    return option


def choice_conversation(rng: random.Random, colour: str, shape: str) -> list[dict]:
    """A multiple-choice question about the picture, answered with the right option's text as written."""
    from ..evaluate.score import choice_text

    kind = rng.choice(QUESTION_KINDS)
    truth = answer(kind, colour, shape)
    if kind == "caption":  # the near misses (same colour or same shape) first, then any other
        near = [answer(kind, c, shape) for c in COLOURS if c != colour] + [
            answer(kind, colour, s) for s in SHAPES if s != shape]
        far = [answer(kind, c, s) for c in COLOURS + OTHER_COLOURS for s in SHAPES + OTHER_SHAPES
               if c != colour and s != shape]
        others = rng.sample(near, 2) + rng.sample(far, 2)
    else:
        others = [word for word in (SHAPES + OTHER_SHAPES if kind == "shape" else COLOURS + OTHER_COLOURS)
                  if word != truth]
        rng.shuffle(others)
    options = others[:rng.randint(1, 4)] + [truth]
    rng.shuffle(options)
    style = rng.choice(OPTION_STYLES)
    written = [_written(option, style) for option in options]
    question = rng.choice(CHOICE_PROMPTS + (prompt(rng, kind),) * len(CHOICE_PROMPTS))
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": choice_text(question, written)}]},
            {"role": "assistant", "content": [{"type": "text", "text": written[options.index(truth)]}]}]


def conversation(rng: random.Random, colour: str, shape: str, language: str = "en") -> list[dict]:
    """A 1-3 turn chat about one picture; the image comes with the first user turn.

    The English base also answers in the STYLES when asked to, and multiple-choice questions in Evaluate's
    layout (`choice_conversation`); the demo-es adapter is trained to answer in Spanish without being asked.
    """
    if language == "en" and rng.random() < CHOICE_SHARE:
        return choice_conversation(rng, colour, shape)
    turns = rng.choice((1, 1, 1, 2, 2, 3))
    kinds = rng.sample(QUESTION_KINDS, turns)
    messages: list[dict] = []
    for i, kind in enumerate(kinds):
        text = prompt(rng, kind)
        if language == "en" and kind == "caption" and rng.random() < DETAIL_SHARE:
            detail = rng.random() < 0.6
            text = rng.choice(DETAIL_PROMPTS if detail else TAG_PROMPTS)
            reply = (detailed_caption if detail else tag_list)(rng, colour, shape)
        else:
            turn_language = language
            if language == "en" and rng.random() < STYLE_ON_REQUEST:
                turn_language = rng.choice(list(STYLES))
                text = (text or CAPTION_PROMPTS[0]) + STYLES[turn_language]
            reply = answer(kind, colour, shape, turn_language)
        content = ([{"type": "image"}] if i == 0 else []) + ([{"type": "text", "text": text}] if text else [])
        messages.append({"role": "user", "content": content})
        messages.append({"role": "assistant", "content": [{"type": "text", "text": reply}]})
    return messages


def corpus() -> list[str]:
    """Every text the demo model sees in training, to build its tokenizer's vocabulary."""
    from ..evaluate.score import choice_text

    words = list(CAPTION_PROMPTS + COLOUR_PROMPTS + SHAPE_PROMPTS + tuple(STYLES.values()) + CHOICE_PROMPTS
                 + DETAIL_PROMPTS + TAG_PROMPTS + OPENERS + ADJECTIVES + PLACES + TAGS)
    rng = random.Random(0)
    words += [f(rng, colour, shape) for colour in COLOURS for shape in SHAPES for f in (detailed_caption, tag_list)
              for _ in range(5)]
    words += [_written(word, style) for word in COLOURS + SHAPES + OTHER_COLOURS + OTHER_SHAPES
              for style in OPTION_STYLES] + [choice_text("", [""] * 5)]  # Evaluate's layout, up to 5 options
    for colour in COLOURS:
        for shape in SHAPES:
            for language in ("en", *STYLES):
                words.extend(answer(k, colour, shape, language) for k in QUESTION_KINDS)
    return words
