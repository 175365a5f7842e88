"""Reading a generated answer: which option it names, and how close a caption is to its references.

`parse_answer` takes what models actually write ("B", "(B)", "B.", "Answer: B", "The answer is B",
"b", or the option's text, exact or inside a sentence, or else its words among others; the longest option
found wins).
`caption_metrics` gives exact match, keyword match, BLEU and chrF (sacrebleu) and ROUGE-L
(rouge-score) of one caption against its references.
"""

from __future__ import annotations

import functools
import re

# An answer that is nothing but a letter: "B", "b", "(B)", "B.", "B)".
_ONLY_LETTER = re.compile(r"^\(?([A-Za-z])\)?[.:)]?$")
# An answer that starts with an upper-case letter marked as an option: "B. red", "(B) red", "B) red".
_LEADING_LETTER = re.compile(r"^(?:\(([A-Z])\)|([A-Z])[.:)])(?=\s|$)")
# "Answer: B", "The answer is (B).", "option C", "the correct choice is b."
_NAMED_LETTER = re.compile(r"\b(?:answer|option|choice)(?:\s+is)?\s*[:\-]?\s*\(?([A-Za-z])\)?(?=$|[\s.,;:)!])",
                           re.IGNORECASE)
_PUNCTUATION = re.compile(r"[^\w\s]")
LETTER_INDEX = {letter: i for i, letter in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZ")}
# Words a caption's meaning does not rest on; keyword match asks for every other word of a reference.
STOPWORDS = frozenset(
    "a an the of on in at to with and or is are was were be been this that these those it its there here "
    "some any against over under into onto by for from as".split())


def _letter(answer: str, count: int) -> int | None:
    found = _ONLY_LETTER.match(answer) or _LEADING_LETTER.match(answer)
    if found is None:
        found = _NAMED_LETTER.search(answer)
        # A lower-case letter followed by a word is an article ("the answer is a circle"), not an option.
        if found is not None and found.group(1).islower() and answer[found.end():][:1].isspace():
            found = None
    if found is None:
        return None
    index = LETTER_INDEX.get(next(group for group in found.groups() if group).upper())
    return index if index is not None and index < count else None


def _plain(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().strip(".!?;:,\"'").lower())


def _option_text(answer: str, options: tuple[str, ...] | list[str]) -> int | None:
    plain = _plain(answer)
    texts = [_plain(option) for option in options]
    if plain in texts:
        return texts.index(plain)
    found = [(len(text), i) for i, text in enumerate(texts)
             if text and re.search(rf"(?<!\w){re.escape(text)}(?!\w)", plain)]
    if not found:  # the option's words said among others: "a red circle" names "a circle", "the big one is blue"
        said = set(content_words(answer))
        found = [(len(words), i) for i, words in enumerate(map(content_words, options)) if words and said >= set(words)]
    if not found:
        return None
    found.sort(reverse=True)
    if len(found) > 1 and found[1][0] == found[0][0] and texts[found[1][1]] != texts[found[0][1]]:
        return None  # two different options of the same length: the answer does not decide
    return found[0][1]


def parse_answer(text: str, options: tuple[str, ...] | list[str]) -> int | None:
    """The index of the option a generated answer names, or None when it names none (counted wrong)."""
    answer = (text or "").strip()
    if not answer or not options:
        return None
    letter = _letter(answer, len(options))
    return letter if letter is not None else _option_text(answer, options)


# A word or a run of up to three words said three times or more in a row: "colour colour colour", "red circle red
# circle red circle". chrF credits such a caption for the characters it shares with the reference (an adapter half
# way to a new style wrote "shape=square; colour colour colour ... colourred" and scored 73 against the base's 31).
_REPEATED = re.compile(r"(?<!\S)(\S+(?: \S+){0,2})(?: \1){2,}(?!\S)")


def repeats_itself(text: str) -> bool:
    """Whether a generated caption repeats a word or a few words three times in a row (a degenerate answer)."""
    return bool(_REPEATED.search(normalise(text)))


def normalise(text: str) -> str:
    """Lower case, punctuation removed, spaces collapsed: the form exact and keyword match compare."""
    return " ".join(_PUNCTUATION.sub(" ", text.lower()).split())


def content_words(text: str) -> list[str]:
    """The words of `text` that keyword match asks for (stopwords dropped)."""
    return [word for word in normalise(text).split() if word not in STOPWORDS]


@functools.cache
def _rouge():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"])


def caption_metrics(prediction: str, references: tuple[str, ...] | list[str]) -> dict:
    """Exact and keyword match (bool) and BLEU, chrF, ROUGE-L (0-100) of a caption against its references, and
    whether it repeats itself (`repeats_itself`) where no reference does."""
    import sacrebleu

    references = [ref for ref in references if ref.strip()]
    repeats = repeats_itself(prediction) and not any(repeats_itself(ref) for ref in references)
    if not references:
        return {"exact": False, "keywords": False, "bleu": 0.0, "chrf": 0.0, "rougeL": 0.0, "repeats": repeats}
    said = normalise(prediction)
    words = set(said.split())
    keywords = any(all(word in words for word in (content_words(ref) or normalise(ref).split()))
                   for ref in references)
    return {
        "exact": any(said == normalise(ref) for ref in references),
        "keywords": bool(said) and keywords,
        "bleu": round(sacrebleu.sentence_bleu(prediction, references).score, 2),
        "chrf": round(sacrebleu.sentence_chrf(prediction, references).score, 2),
        "rougeL": round(100 * _rouge().score_multi(references, prediction)["rougeL"].fmeasure, 2),
        "repeats": repeats,
    }
