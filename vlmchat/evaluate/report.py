"""What an eval run found, and the files it leaves: results.csv, summary.json and chart.png.

`EvalResult` holds every model's score on every item (and why an item was skipped), and turns
them into the tables the UI and CLI show, the verdicts (adapter vs base, McNemar) and the files
under `<outputs>/eval/<run-id>/`, each written atomically. A run that compares methods (loglik and
generate on the same questions) has a row per model and method ("base · loglik"), its verdicts per
method, and for each model the methods against each other: accuracy (McNemar) and speed.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import re
import shlex
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from ..files import write_bytes_atomic, write_text_atomic
from ..lora.runtime import is_base
from ..settings import settings_flag
from .score import LETTERS, ItemScore, per_character
from .sets import CAPTION, EvalItem, EvalSet
from .stats import next_step, score_verdict, verdict, wilson_interval

CSV_COLUMNS = ["Question", "Generated Answer", "Correct Answer", "Is Correct", "Response Time (s)", "model",
               "subject", "method", "source", "predicted", "correct (acc)", "correct (acc_norm)", "option scores",
               "option scores per character", "problem"]
CAPTION_COLUMNS = ["exact", "keywords", "bleu", "chrf", "rougeL", "repeats"]


@dataclass
class EvalResult:
    """Scores of each model on the items of one eval set, from one pass over the data."""

    eval_set: EvalSet
    models: list[str]                              # the rows: model names, or "model · method" (`entries`)
    method: str                                    # "loglik", "generate", "caption", or "loglik+generate"
    config: dict = field(default_factory=dict)     # what the run was asked (batch size, tokens, beams, limit, ...)
    scores: dict[str, dict[int, ItemScore]] = field(default_factory=dict)  # model -> item index -> score
    skipped: dict[str, dict[int, str]] = field(default_factory=dict)       # model -> item index -> why
    cancelled: bool = False
    stopped: dict[str, str] = field(default_factory=dict)  # model -> why it was stopped (an endpoint that fails)
    done: int = 0                                  # items handled (scored or skipped) for every model
    elapsed_s: float = 0.0
    folder: Path | None = None
    entries: dict[str, tuple[str, str]] = field(default_factory=dict)  # row -> (model, method), methods compared

    def __post_init__(self) -> None:
        for name in self.models:
            self.scores.setdefault(name, {})
            self.skipped.setdefault(name, {})

    def methods(self) -> list[str]:
        """The run's methods, in order."""
        return self.method.split("+")

    def model_of(self, row: str) -> str:
        """The model (base, adapter, endpoint) a row scores."""
        return self.entries.get(row, (row, ""))[0]

    def method_of(self, row: str) -> str:
        """The method a row was scored with."""
        return self.entries.get(row, ("", self.method))[1]

    def metric_of(self, row: str) -> str:
        """What a row's `accuracy` counts: `metric` for loglik rows, keyword match for captions, acc for the others."""
        method = self.method_of(row)
        return self.metric if method == "loglik" else "keywords" if method == "caption" else "acc"

    @property
    def items(self) -> list[EvalItem]:
        """The eval set's usable items."""
        return self.eval_set.items

    @functools.cached_property
    def metric(self) -> str:
        """The accuracy the verdicts use (worked out once: every row's verdict asks): acc_norm when some question's
        options differ in their number of words.

        A summed log-probability falls with every word, so phrases of different lengths need normalising; one-word
        options (red / yellow) do not, and per character they lean to the longer word: on 100 pictures drawn by
        another generator the demo's colour questions scored acc 96%, acc_norm 84%. Caption sets: chrF (summary.json
        said "acc" while its verdicts were in chrF, blind tester)."""
        if self.method == "caption":
            return "chrF"
        if "loglik" in self.methods() and any(len({len(o.split()) for o in item.options}) > 1 for item in self.items):
            return "acc_norm"
        return "acc"

    def metric_reason(self) -> str:
        """Why `metric` is the one the verdicts use (for each method, when the run compares them)."""
        if len(self.methods()) > 1:
            return "; ".join(f"{method} rows: {self._reason(method)}" for method in self.methods())
        return self._reason(self.method)

    def _reason(self, method: str) -> str:
        if method == "caption":
            return ("chrF (character n-gram F-score, sacrebleu) of each caption against its references, base and "
                    "adapter compared caption by caption; keyword match (every content word of a reference appears), "
                    "exact match, BLEU and ROUGE-L beside it")
        if method == "generate":
            return "acc: the generated answer, parsed as a letter or an option's text (unparsed = wrong)"
        if self.metric == "acc_norm":
            return "acc_norm (log-probability per character of the option): the options differ in number of words"
        return ("acc (summed log-probability of the option): every question's options have the same number of "
                "words, so they need no normalising by length")

    def is_correct(self, score: ItemScore, metric: str | None = None) -> bool:
        """Whether `score` counts as right under `metric` (default: the verdicts' metric; a generated answer has no
        acc_norm and counts by acc)."""
        if (metric or self.metric) == "acc_norm" and score.correct_norm is not None:
            return bool(score.correct_norm)
        return bool(score.correct)

    def paired(self, *names: str) -> list[int]:
        """Indices of the items every model of `names` scored (default: all the run's models)."""
        names = names or tuple(self.models)
        return sorted(set.intersection(*(set(self.scores[m]) for m in names))) if names else []

    def set_name(self) -> str:
        """The set as its user knows it: the one data file its questions come from, else its folder's name (an
        upload's folder without the id vlmchat adds: the chart read "set-41-9e2ec696a51d", outside reviewer)."""
        files = {item.source.rsplit(":", 1)[0] for item in self.items}
        name = files.pop() if len(files) == 1 else Path(str(self.eval_set.path)).name
        return re.sub(r"-[0-9a-f]{12}$", "", Path(name).name)

    def scored(self) -> set[int]:
        """Indices of the items any model scored (`paired` gives those every model scored)."""
        return set().union(*(self.scores[name] for name in self.models))

    def nothing_scored(self) -> str:
        """Why a finished run is a mistake when no model scored a question ('' when one did, or it was cancelled)."""
        if self.cancelled or self.scored():
            return ""
        return ("No question was scored: every model skipped every row (the reasons are listed); give the questions "
                "what the model needs (a picture, for the demo), or evaluate another model.")

    def problems(self) -> list[str]:
        """Every row that was not scored: the reader's and the run's, with the reason, once for the models it was
        skipped for alike (a row every model skipped was listed once per model, and counted so: "6 rows skipped" of 5,
        outside reviewer)."""
        found = [str(p) for p in self.eval_set.problems]
        skipped: dict[tuple[int, str], list[str]] = {}
        for name in self.models:
            for index, why in self.skipped[name].items():
                skipped.setdefault((index, why), []).append(name)
        for (index, why), names in sorted(skipped.items()):
            found.append(f"{self.items[index].source}: {why} ({', '.join(names)})")
        return found

    def model_summary(self, name: str) -> dict:
        """n, acc, acc_norm, 95% interval of the verdicts' metric, mean ms per question, problems."""
        scored = list(self.scores[name].values())
        n = len(scored)
        right = sum(self.is_correct(s, self.metric_of(name)) for s in scored)
        low, high = wilson_interval(right, n)
        summary = {
            "n": n, "acc": _mean(s.correct for s in scored),
            "acc_norm": _mean(s.correct_norm for s in scored) if self.method_of(name) == "loglik" else None,
            "metric": self.metric_of(name), "accuracy": right / n if n else None, "interval": [low, high],
            "mean_ms": 1000 * _mean(s.seconds for s in scored) if n else None,
            "problems": len(self.eval_set.problems) + len(self.skipped[name]),
        }
        if self.method == "caption":
            summary.update({key: _mean(s.metrics.get(key, 0) for s in scored) for key in CAPTION_COLUMNS})
        return summary

    def verdicts(self) -> list[tuple[str, dict]]:
        """(sentence, numbers) for each adapter against the base, on the questions both scored (per method), then for
        each model scored by two methods the one against the other."""
        found = []
        for method in self.methods():
            rows = [row for row in self.models if self.method_of(row) == method]
            base = next((row for row in rows if is_base(self.model_of(row))), None)
            found += [self._verdict(base, row, self.paired(base, row)) for row in rows
                      if base is not None and row != base]
        return found + self._method_verdicts()

    def next_steps(self) -> list[str]:
        """What to do after each adapter's verdict (use it, keep the base, or score more questions)."""
        several = len(self.methods()) > 1  # each method's verdicts: said which ("next" lines read as contradictory)
        return list(dict.fromkeys(
            ("by " + self.method_of(numbers["adapter"]) + ": " if several else "")
            + next_step(dict(numbers, adapter=self.model_of(numbers["adapter"])))
            for _, numbers in self.verdicts() if numbers.get("n") and "kind" not in numbers))

    def _method_verdicts(self) -> list[tuple[str, dict]]:
        """For each model scored by two methods: the second against the first, in accuracy (McNemar, on the
        questions both scored) and in time a question."""
        found = []
        for model in dict.fromkeys(self.model_of(row) for row in self.models):
            rows = [row for row in self.models if self.model_of(row) == model]
            if len(rows) < 2:
                continue
            first, second = rows[0], rows[1]
            paired = self.paired(first, second)
            if not paired:
                continue
            sentence, numbers = verdict(f"{model} by {self.method_of(second)}",
                                        [self.is_correct(self.scores[first][i]) for i in paired],
                                        [self.is_correct(self.scores[second][i]) for i in paired],
                                        against=self.method_of(first))
            times = {row: self.model_summary(row)["mean_ms"] for row in (first, second)}
            if all(times.values()):
                quick, slow = sorted(times, key=times.get)
                ratio = times[slow] / times[quick]
                # the quicker first, its time first: "loglik 2.8x faster (26.8 vs 9.6 ms)" gave generate's time first
                sentence += (f"; {self.method_of(quick)} {ratio:.1f}x faster ({times[quick]:.1f} vs {times[slow]:.1f}"
                             " ms a question)" if ratio >= 1.1 else
                             f"; about as fast ({times[first]:.1f} vs {times[second]:.1f} ms a question)")
                numbers.update(ms=[times[first], times[second]], speedup=times[second] / times[first])
            found.append((sentence, dict(numbers, kind="methods", model=model,
                                         methods=[self.method_of(first), self.method_of(second)])))
        return found

    def _verdict(self, base: str, name: str, paired: list[int]) -> tuple[str, dict]:
        """`name` against the base on the questions both scored (a model stopped early leaves the others' pairs
        alone); no verdict where there are none."""
        if not paired:
            why = f": {self.stopped[name]}" if name in self.stopped else ""
            return (f"{name}: no verdict, no question was scored by both it and the base{why}",
                    {"adapter": name, "n": 0})
        if self.method == "caption":  # a score per caption: keyword match is blind to wording, order and format
            chrf = lambda model: [self.scores[model][i].metrics.get("chrf", 0.0) for i in paired]  # noqa: E731
            sentence, numbers = score_verdict(name, "chrF", chrf(base), chrf(name))
            return self._with_repeats(sentence, numbers, base, name, paired)
        return verdict(name, [self.is_correct(self.scores[base][i]) for i in paired],
                       [self.is_correct(self.scores[name][i]) for i in paired])

    def _with_repeats(self, sentence: str, numbers: dict, base: str, name: str, paired: list[int]):
        """A caption verdict that also says how many of the adapter's captions repeat themselves, where more than a
        fifth do and more than the base's: chrF credited "shape=square; colour colour colour … colourred" for the
        characters it shares with "shape=square; colour=red", and the verdict told the user to use an adapter
        that wrote 7 such captions in 10 (fine-tune reviewer)."""
        repeating = [i for i in paired if self.scores[name][i].metrics.get("repeats")]
        base_repeating = sum(1 for i in paired if self.scores[base][i].metrics.get("repeats"))
        if len(repeating) <= max(base_repeating, len(paired) / 5):
            return sentence, numbers
        example = self.scores[name][repeating[0]].text.strip()
        example = example if len(example) <= 60 else example[:57] + "…"
        sentence += f"; but {len(repeating)} of its {len(paired)} captions repeat themselves, e.g. '{example}'"
        return sentence, dict(numbers, repeats=len(repeating), repeats_example=example)

    def table_headers(self) -> list[str]:
        """Column names for `table()`; the accuracy column names the metric (caption sets: chrF, the verdicts'
        metric, first, then keyword match with its interval and the other text metrics)."""
        if self.method == "caption":
            return ["model", "chrF", "keywords %", "95% interval", "ms/question", "scored", "problems", "exact %",
                    "BLEU", "ROUGE-L", "repeats %"]
        metrics = {self.metric_of(row) for row in self.models}
        return ["model", f"{metrics.pop()} %" if len(metrics) == 1 else "accuracy %", "95% interval", "ms/question",
                "scored", "problems"]

    def table(self) -> list[list]:
        """[model, accuracy %, 95% interval, mean ms/question, scored, problems] per model, for a UI table; caption
        sets lead with chrF (0-100; keyword match read 0% for every model while the verdict spoke of chrF) and add
        exact match %, BLEU and ROUGE-L."""
        rows = []
        for name in self.models:
            s = self.model_summary(name)
            low, high = s["interval"]
            interval = f"{100 * low:.1f}–{100 * high:.1f}%" if s["n"] else "none scored"  # not 0.0–100.0%
            rows.append([name, _percent(s["accuracy"]), interval,
                         round(s["mean_ms"], 1) if s["mean_ms"] is not None else None, s["n"], s["problems"]])
            if self.method == "caption":
                text = {k: None if s[k] is None else round(s[k], 1) for k in ("bleu", "chrf", "rougeL")}
                rows[-1] = [name, text["chrf"], *rows[-1][1:], _percent(s["exact"]), text["bleu"], text["rougeL"],
                            _percent(s["repeats"])]
        return rows

    def subject_table(self) -> list[list]:
        """[subject, model, scored, accuracy %] per subject and model ([] when no item has a subject)."""
        subjects = sorted({item.subject for item in self.items if item.subject})
        rows = []
        for subject in subjects:
            for name in self.models:
                scored = [s for i, s in self.scores[name].items() if self.items[i].subject == subject]
                rows.append([subject, name, len(scored),
                             _percent(_mean(self.is_correct(s, self.metric_of(name)) for s in scored))])
        return rows

    def command(self) -> str:
        """The `launch.py eval` command that repeats this run."""
        config = self.config
        parts = ["python3", "launch.py", *settings_flag(config.get("settings")), "eval", "--data",
                 str(self.eval_set.path)]
        if config.get("model"):
            parts += ["--model", str(config["model"])]
        models = list(dict.fromkeys(self.model_of(row) for row in self.models))
        for name in models:
            if not is_base(name):
                parts += ["--adapter", name]
        if not any(is_base(m) for m in models):
            parts.append("--no-base")
        if self.method != "caption":
            parts += ["--method", *self.methods()]
        asked = {"image_detail": config.get("image_detail_asked") or config.get("image_detail")}
        for key in ("limit", "batch_size", "max_new_tokens", "num_beams", "image_detail", "output"):
            value = asked.get(key, config.get(key))
            if value is not None:
                parts += ["--" + key.replace("_", "-"), str(value)]
        return shlex.join(parts)

    def summary(self) -> dict:
        """Everything summary.json holds."""
        subjects: dict[str, dict] = {}
        for subject, name, n, accuracy in self.subject_table():
            subjects.setdefault(subject, {})[name] = {"n": n, "accuracy %": accuracy}
        return {
            "data": str(self.eval_set.path), "format": self.eval_set.format, "kind": self.eval_set.kind,
            "method": self.method, "metric": self.metric, "metric_reason": self.metric_reason(),
            "models": {name: self.model_summary(name) for name in self.models},
            "verdicts": [dict(numbers, text=text) for text, numbers in self.verdicts()],
            "next_steps": self.next_steps(),
            "subjects": subjects, "items": len(self.items), "done": self.done, "cancelled": self.cancelled,
            "stopped": self.stopped, "elapsed_s": round(self.elapsed_s, 3), "problems": self.problems(),
            "config": self.config, "command": self.command(),
        }

    def csv_rows(self) -> list[dict]:
        """One row per item and model, skipped ones with their reason."""
        rows = []
        for name in self.models:
            for index, item in enumerate(self.items):
                score = self.scores[name].get(index)
                problem = self.skipped[name].get(index)
                if score is not None or problem is not None:
                    rows.append(self._csv_row(name, item, score, problem or ""))
        return rows

    def _csv_row(self, name: str, item: EvalItem, score: ItemScore | None, problem: str) -> dict:
        row = {"Question": item.question, "model": self.model_of(name), "subject": item.subject,
               "method": self.method_of(name),
               "source": item.source, "problem": problem,
               "Correct Answer": (" | ".join(item.references) if self.eval_set.kind == CAPTION
                                  else _option(item, item.answer))}
        if score is None:
            return row
        picked = score.predicted_norm if self.metric_of(name) == "acc_norm" else score.predicted
        row.update({
            "Generated Answer": score.text if score.text or self.method_of(name) != "loglik" else _option(item, picked),
            "Is Correct": self.is_correct(score, self.metric_of(name)), "Response Time (s)": round(score.seconds, 4),
            "predicted": LETTERS[picked] if picked is not None else "", "correct (acc)": score.correct,
            "correct (acc_norm)": "" if score.correct_norm is None else score.correct_norm,
            "option scores": json.dumps({LETTERS[i]: round(v, 4) for i, v in enumerate(score.scores)})
            if score.scores else "",
            "option scores per character": json.dumps({LETTERS[i]: round(v, 4) for i, v
                                                       in enumerate(per_character(score.scores, item.options))})
            if score.scores else "",
        })
        row.update({key: score.metrics[key] for key in CAPTION_COLUMNS if key in score.metrics})
        return row

    def csv_text(self) -> str:
        """results.csv as text."""
        columns = CSV_COLUMNS + (CAPTION_COLUMNS if self.method == "caption" else [])
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.csv_rows())
        return out.getvalue()

    def write(self, folder: Path, csv_copy: Path | None = None) -> Path:
        """Write results.csv, summary.json and chart.png into `folder` (and the CSV to `csv_copy`)."""
        self.folder = Path(folder)
        text = self.csv_text()
        write_text_atomic(self.folder / "results.csv", text)
        summary = dict(self.summary(), files={name: str(self.folder / name)
                                              for name in ("results.csv", "summary.json", "chart.png")})
        write_text_atomic(self.folder / "summary.json", json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
        write_bytes_atomic(self.folder / "chart.png", self.chart_png())
        if csv_copy is not None:  # last: the run's folder is whole whatever becomes of the copy
            try:
                write_text_atomic(Path(csv_copy), text)
            except OSError as exc:
                raise InputError(f"The results are in {self.folder}, but the copy to {csv_copy} could not be "
                                 f"written ({exc.strerror or exc}).") from None
        return self.folder

    def charted(self) -> tuple[list[float], list[list[float]] | None, str]:
        """(each model's bar, its error bars below and above or None, the axis label) for `chart_png`."""
        summaries = [self.model_summary(name) for name in self.models]
        if self.method == "caption":
            return [s["chrf"] or 0 for s in summaries], None, "chrF, mean of the captions"
        values = [100 * (s["accuracy"] or 0) for s in summaries]
        errors = [[v - 100 * s["interval"][0] if s["n"] else 0 for v, s in zip(values, summaries)],  # none scored:
                  [100 * s["interval"][1] - v if s["n"] else 0 for v, s in zip(values, summaries)]]  # no 0-100 bar
        return values, errors, f"{self.table_headers()[1]} (95% Wilson interval)"

    def chart_title(self) -> str:
        """The set, the method(s) and how many questions any model scored (not only the paired ones)."""
        scored = len(self.scored())
        return f"{self.set_name()}: {' and '.join(self.methods())}, {scored} question{'s' if scored != 1 else ''}"

    def chart_png(self) -> bytes:
        """A bar chart of each model's accuracy with its 95% interval as error bars (PNG bytes); for a caption set,
        its mean chrF, the verdicts' metric (its keyword match was charted: 0% for every model where the references
        share words no model says, while the verdict spoke of chrF)."""
        # The object API with the Agg canvas: no pyplot, so no global backend or figure state in a UI process.
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        values, errors, label = self.charted()
        width = max(4.0, 1.4 * len(self.models) + 2)
        figure = Figure(figsize=(width, 3.6), dpi=100)
        FigureCanvasAgg(figure)
        axes = figure.add_subplot()
        axes.bar(self.models, values, yerr=errors, capsize=6, color="#4c78a8")
        axes.set_ylim(0, 105)
        axes.set_ylabel(label)
        # Wrapped to the figure (~9 characters an inch at this size): a long file name was cut at both edges.
        axes.set_title(textwrap.fill(self.chart_title(), width=int(width * 9), break_long_words=True), fontsize=10)
        figure.tight_layout()
        out = io.BytesIO()
        figure.savefig(out, format="png")
        return out.getvalue()


def _option(item: EvalItem, index: int | None) -> str:
    if index is None or not 0 <= index < len(item.options):
        return ""
    return f"{LETTERS[index]}. {item.options[index]}"


def _mean(values) -> float | None:
    values = [float(v) for v in values if v is not None]
    return sum(values) / len(values) if values else None


def _percent(value: float | None) -> float | None:
    return None if value is None else round(100 * value, 1)
