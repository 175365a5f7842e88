"""The demo's multiple-choice accuracy on questions written as other eval sets write them, two builds side by side.

Run: .venv/bin/python benchmarks/eval_wordings.py [--questions 192] [--before REV] [--model PATH]

Held-out pictures (`vlmchat/demo/heldout.py`), one question each, alternating shape and colour; wordings the demo
was never trained on; 4-5 options, some of them shapes and colours it does not draw, written in one of four ways
(circle / Circle / CIRCLE / a circle), the answer's place moving. Both `launch.py eval` methods (loglik; generate,
greedy) on the shipped demo and on the demo of git revision --before (default: the build before the one that
learned multiple-choice questions), each loaded through the model manager in this one process.
Prints a markdown table: accuracy per build, method and way of writing the options.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from vlmchat.demo.heldout import heldout_pictures  # noqa: E402
from vlmchat.evaluate.run import EvalOptions, run_eval  # noqa: E402
from vlmchat.evaluate.sets import EvalItem, EvalSet  # noqa: E402
from vlmchat.models.manager import ModelManager  # noqa: E402
from vlmchat.settings import load_settings  # noqa: E402

SHAPES = ("circle", "square", "triangle", "star", "hexagon")
COLOURS = ("red", "green", "blue", "yellow", "orange")
# Written apart from the demo's training questions (vlmchat/demo/dialogue.py), none of them taken from there.
WORDINGS = {"shape": ("Which geometric figure is drawn in the image?", "What is pictured?",
                      "Determine the polygon or curve visible.", "The thing in the middle of the photo is a",
                      "What is the shape of the object shown?", "Identify the shape in this picture.",
                      "What form is depicted?", "Look closely: which outline does it have?"),
            "colour": ("What paint was used for the object?", "The object in the picture is coloured:",
                       "Which tint does the object display?", "Determine its pigment.",
                       "What is the colour of the figure?", "Which of these colours does the object have?",
                       "Identify the color of the shape.", "Its fill is")}
STYLES = {"circle": str, "Circle": str.capitalize, "CIRCLE": str.upper,
          "a circle": lambda word: f"a {word}" if word in SHAPES else word}
BEFORE = "de179e8"  # models/vlmchat-demo as built on 2026-12-02
SHIPPED = ROOT / "models" / "vlmchat-demo"


def eval_set(folder: Path, count: int) -> EvalSet:
    items = []
    for index, (image, colour, shape) in enumerate(heldout_pictures(count, seed=2026)):
        path = folder / f"{index:03d}.png"
        image.save(path)
        kind, truth = ("shape", shape) if index % 2 else ("colour", colour)
        words = SHAPES if kind == "shape" else COLOURS
        words = words[index % 5:] + words[:index % 5]
        style = list(STYLES)[(index // 2) % len(STYLES)]
        items.append(EvalItem(f"q{index}", WORDINGS[kind][(index // 8) % len(WORDINGS[kind])], (str(path),),
                              tuple(STYLES[style](word) for word in words), words.index(truth), subject=style))
    return EvalSet(str(folder), "benchmark", "choice", items)


def build_of(revision: str, folder: Path) -> Path:
    """models/vlmchat-demo as committed at `revision`, written to `folder`."""
    folder.mkdir(parents=True)
    names = subprocess.run(["git", "ls-tree", "--name-only", f"{revision}:models/vlmchat-demo"], cwd=ROOT,
                           check=True, capture_output=True, text=True).stdout.split()
    for name in names:
        blob = subprocess.run(["git", "show", f"{revision}:models/vlmchat-demo/{name}"], cwd=ROOT, check=True,
                              capture_output=True).stdout
        (folder / name).write_bytes(blob)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=192)
    parser.add_argument("--before", default=BEFORE)
    parser.add_argument("--model", default=str(SHIPPED), help="the build beside it (default: the shipped demo)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "set").mkdir()
        questions = eval_set(tmp / "set", args.questions)
        file = tmp / "settings.toml"
        file.write_text(f'[paths]\noutputs = "{(tmp / "outputs").as_posix()}"\n', encoding="utf-8")
        builds = {"shipped demo" if Path(args.model) == SHIPPED else args.model: args.model,
                  f"demo at {args.before}": str(build_of(args.before, tmp / "before"))}
        print(f"{args.questions} held-out questions, options written 4 ways ({args.questions // 4} each)\n")
        print("| build | method | all | " + " | ".join(STYLES) + " |")
        print("|---|---|---:|" + "---:|" * len(STYLES))
        for name, path in builds.items():
            manager = ModelManager(load_settings(file).override("model", id=path))
            manager.load()
            for method in ("loglik", "generate"):
                result = run_eval(manager, questions, ["base"], method, EvalOptions(batch_size=8),
                                  folder=tmp / "outputs" / f"{name}-{method}")
                by_style = {subject: accuracy for subject, _, _, accuracy in result.subject_table()}  # % per writing
                cells = [f"{by_style[style]:.1f}%" for style in STYLES]
                print(f"| {name} | {method} | {result.model_summary('base')['accuracy']:.1%} | " + " | ".join(cells)
                      + " |")
            manager.unload()


if __name__ == "__main__":
    main()
