"""Which caption styles does a fine-tune with the defaults learn on the demo? 80 pictures, 20 new ones.

Each style is a caption a user might bring: two the demo writes when asked (French, capitals: its own
`dialogue.answer`), the others written apart from its training texts. Each dataset is 80
pictures in LLaMA-Factory's ShareGPT layout ("Describe the image." -> the style's caption), trained with the
shipped settings.toml and nothing else given (the auto schedule, the model's own recipe), through the same
child-process job as the Fine-tune button. The adapter then captions 20 held-out pictures from the separately
written generator (greedy, up to 40 new tokens); a caption counts when it is exactly the style's caption.

Run: .venv/bin/python benchmarks/finetune_styles.py [--model demo|PATH ...] [--styles NAME ...]
Several --model folders (e.g. another `launch.py build-demo --output` build) are measured on the same data.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from finetune_sizes import write_sharegpt  # noqa: E402
from vlmchat.demo.dialogue import answer  # noqa: E402

DUTCH = {"red": "rode", "green": "groene", "blue": "blauwe", "yellow": "gele",
         "circle": "cirkel", "square": "vierkant", "triangle": "driehoek"}
STYLES = {
    "french": lambda c, s: answer("caption", c, s, "fr"),
    "upper": lambda c, s: answer("caption", c, s, "upper"),
    "bare": lambda c, s: f"{c} {s}",
    "dash": lambda c, s: f"{c}-{s}",
    "paren": lambda c, s: f"{s} ({c})",
    "key-value": lambda c, s: f"color={c}, shape={s}",
    "pipe": lambda c, s: f"Colour: {c} | Shape: {s}",
    "photo": lambda c, s: f"A photo of a {c} {s}.",
    "shows": lambda c, s: f"The image shows a {c} {s} on a white background.",
    "tags": lambda c, s: f"{s}, {c}, simple, flat",
    "artwork": lambda c, s: f"a minimalist artwork featuring a {c} {s}",
    "dutch": lambda c, s: f"een {DUTCH[c]} {DUTCH[s]}",
}


def learned(settings, base: Path, name: str, tmp: Path) -> tuple[int, str]:
    """Captions of 20 new pictures in the style, of 20, after a default fine-tune; and one example caption."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from vlmchat.demo.heldout import heldout_pictures
    from vlmchat.demo.measure import answer_batch
    from vlmchat.finetune import runner
    from vlmchat.finetune.spec import JobSpec
    from vlmchat.lora.runtime import attach_adapter

    style, work = STYLES[name], tmp / f"{base.name}-{name}"
    data = write_sharegpt(work / "data", 80, seed=5, caption=style)
    spec = JobSpec.from_settings(settings, name, str(data), model_source=str(base),
                                 adapters_dir=str(work / "adapters"), evaluate=False)
    status = runner.wait(runner.start_job(spec, work / "jobs"))
    if status.state != "done":
        return 0, f"{status.state}: {status.message}"
    model = attach_adapter(AutoModelForImageTextToText.from_pretrained(base), name, work / "adapters" / name).eval()
    pictures = heldout_pictures(20, seed=11)
    captions = answer_batch(model, AutoProcessor.from_pretrained(base), [p[0] for p in pictures],
                            "Describe the image.", max_new_tokens=40)
    wrong = [c for c, (_, colour, shape) in zip(captions, pictures) if c.strip() != style(colour, shape)]
    return len(captions) - len(wrong), (wrong or captions)[0]


def cell(text: str) -> str:
    """Text for a markdown table cell (a '|' in a caption would end the cell)."""
    return text.replace("|", "\\|")


def main() -> None:
    from vlmchat.models.resolve import demo_model_path
    from vlmchat.settings import load_settings

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", nargs="+", default=["demo"], help="'demo' (the shipped one) or model folders")
    parser.add_argument("--styles", nargs="+", default=list(STYLES), choices=list(STYLES))
    args = parser.parse_args()
    settings = load_settings()
    bases = [demo_model_path(settings) if m == "demo" else Path(m).resolve() for m in args.model]
    with tempfile.TemporaryDirectory() as temp:
        found = {name: [learned(settings, base, name, Path(temp)) for base in bases] for name in args.styles}
    print("| style (80 pictures, defaults) | example | " + " | ".join(
        f"{m}: of 20 new pictures (a wrong one, if any)" for m in args.model) + " |")
    print("|---|---|" + "---|" * len(bases))
    for name, results in found.items():
        cells = " | ".join(f"{right}/20 (`{cell(example)}`)" if right < 20 else "20/20" for right, example in results)
        print(f"| {name} | `{cell(STYLES[name]('red', 'circle'))}` | {cells} |")


if __name__ == "__main__":
    main()
