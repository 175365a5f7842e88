"""How sure we are: Wilson intervals for an accuracy and the exact McNemar test for base vs adapter.

Both come from `scipy.stats.binomtest`: the interval is its Wilson score interval, and McNemar's
exact test is the two-sided binomial test of the discordant pairs (questions one model got right
and the other wrong) against 1/2. Captions have a score each (chrF), not right or wrong: base and
adapter are compared caption by caption with the Wilcoxon signed-rank test (`scipy.stats.wilcoxon`).
"""

from __future__ import annotations

from typing import Sequence

SIGNIFICANCE = 0.05


def wilson_interval(correct: int, total: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of correct/total (fractions); (0.0, 1.0) when there is nothing to count."""
    if total <= 0:
        return 0.0, 1.0
    from scipy.stats import binomtest

    interval = binomtest(int(correct), int(total)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(interval.low), float(interval.high)


def mcnemar_exact(better: int, worse: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts (1.0 when there are none)."""
    if better + worse == 0:
        return 1.0
    from scipy.stats import binomtest

    return float(binomtest(int(better), int(better + worse), 0.5, alternative="two-sided").pvalue)


def verdict(adapter: str, base_correct: Sequence[bool], adapter_correct: Sequence[bool],
            against: str = "base") -> tuple[str, dict]:
    """One sentence on whether `adapter` beats the base (named `against`) on the same questions, and its numbers."""
    if len(base_correct) != len(adapter_correct):
        raise ValueError("base and adapter must be scored on the same questions")
    n = len(base_correct)
    better = sum(1 for b, a in zip(base_correct, adapter_correct) if a and not b)
    worse = sum(1 for b, a in zip(base_correct, adapter_correct) if b and not a)
    base_acc = sum(map(bool, base_correct)) / n if n else 0.0
    adapter_acc = sum(map(bool, adapter_correct)) / n if n else 0.0
    points = 100 * (adapter_acc - base_acc)
    p = mcnemar_exact(better, worse)
    if p < SIGNIFICANCE:
        judged = f"significantly {'better' if better > worse else 'worse'} than {against}"
    else:
        judged = "not significant"
    sentence = (f"{adapter}: {points:+.1f} points vs {against}, {judged} (p = {_p(p)}, McNemar, {n} paired "
                f"question{'s' if n != 1 else ''}; {better} better, {worse} worse)")
    numbers = {"adapter": adapter, "n": n, "base_acc": base_acc, "adapter_acc": adapter_acc, "points": points,
               "better": better, "worse": worse, "p": p, "significant": p < SIGNIFICANCE}
    return sentence, numbers


def fewest_flips(alpha: float = SIGNIFICANCE) -> int:
    """The fewest discordant questions that can give an exact McNemar p below `alpha`: all of them one way, for
    which p = 2 * 0.5**k (6 for 0.05)."""
    flips = 1
    while mcnemar_exact(flips, 0) >= alpha:
        flips += 1
    return flips


def next_step(numbers: dict) -> str:
    """What to do after a verdict (`verdict`'s or `score_verdict`'s numbers): use the adapter, keep the base, or
    score more questions, with how many more can tell."""
    name, flips = numbers["adapter"], numbers.get("better", 0) + numbers.get("worse", 0)
    these = "these pictures" if "metric" in numbers else "these questions"  # captions: a score per picture
    trained = not name.startswith("endpoint:")  # an endpoint's model was not trained here
    if numbers.get("repeats"):  # however its score came out: a caption that runs on is no caption
        return (f"Do not use {name} as it is: {numbers['repeats']} of its {numbers['n']} captions repeat themselves "
                "(see them beside the base's in Compare)."
                + (" If you trained it on a new style, train again with more pictures (a new style takes about 80 "
                   "with the defaults) or more steps (the thorough preset)." if trained else ""))
    if "metric" in numbers and flips == 0:  # every caption the same as the base's: nothing learned that shows
        return (f"{name} wrote what the base writes on every one of these pictures: it changed nothing they show."
                + (" Train it longer (more steps, the thorough preset) and check that the dataset's captions say "
                   "something other than what the base says." if trained else ""))
    if numbers.get("significant"):
        if numbers["points"] > 0:
            return f"{name} helps on {these}: pick it in Chat's Adapter box (or Activate it in the Adapters tab)."
        return (f"{name} is worse than the base on {these}: keep the base for them, and see both answers "
                "side by side in the Compare tab.")
    if "metric" not in numbers and flips < fewest_flips():
        return (f"Too few questions told base and {name} apart ({flips}) for any verdict: McNemar needs at least "
                f"{fewest_flips()} answered differently, all one way, for p < {SIGNIFICANCE}; evaluate on more "
                "questions (of the kind the adapter was trained for).")
    return (f"The difference between base and {name} on {these} may be noise: more of them narrow it (the "
            "interval shrinks with the square root of their number), or it is too small to matter.")


def _p(p: float) -> str:
    return "1.0" if p >= 0.995 else f"{p:.2g}" if p >= 0.001 else f"{p:.1e}"


def score_verdict(adapter: str, metric: str, base_scores: Sequence[float],
                  adapter_scores: Sequence[float]) -> tuple[str, dict]:
    """`verdict` for a score per item (a caption's chrF, 0-100): the mean difference, and the two-sided Wilcoxon
    signed-rank test of the paired differences (ties left out, as Wilcoxon did)."""
    n = len(base_scores)
    differences = [a - b for b, a in zip(base_scores, adapter_scores)]
    better, worse = sum(d > 0 for d in differences), sum(d < 0 for d in differences)
    base_mean = sum(base_scores) / n if n else 0.0
    adapter_mean = sum(adapter_scores) / n if n else 0.0
    if better + worse == 0:
        p = 1.0
    else:
        from scipy.stats import wilcoxon

        p = float(wilcoxon(adapter_scores, base_scores, zero_method="wilcox").pvalue)
    points = adapter_mean - base_mean
    judged = (f"significantly {'better' if points > 0 else 'worse'} than base" if p < SIGNIFICANCE
              else "not significant")
    sentence = (f"{adapter}: {points:+.1f} {metric} vs base, {judged} (p = {_p(p)}, Wilcoxon signed-rank, {n} paired "
                f"caption{'s' if n != 1 else ''}; {better} better, {worse} worse; {metric} {base_mean:.1f} -> "
                f"{adapter_mean:.1f})")
    numbers = {"adapter": adapter, "n": n, "metric": metric, "base_mean": base_mean, "adapter_mean": adapter_mean,
               "points": points, "better": better, "worse": worse, "p": p, "significant": p < SIGNIFICANCE}
    return sentence, numbers
