"""What a user of a real-size model waits for on this machine: every row a ratio measured side by side in one run.

Run: .venv/bin/python benchmarks/realsize/bench.py [--model smolvlm-256m ...] [--repeats 3] [--only decode,ttft,...]
                                                  [--dtype auto|float32|bfloat16]
(builds the model folder first with benchmarks/realsize/build.py when it is missing)

Rows (interleaved runs, medians), on a model built from its published config with random weights:
- decode: the app's stream (thread + streamer + stop criterion) vs model.generate on the main thread, and the
  steps between them (a thread, a streamer), so a gap is attributed; decode vs the memory-bandwidth bound;
- dtype: the plan's dtype on this CPU (bfloat16 where the CPU has bf16 instructions) vs the other one: first
  token with one picture and decode;
- ttft: time to first token with one 512x512 picture at image detail low vs high;
- caption: 8 pictures in one batch vs one at a time (low detail: one tile each);
- adapter: switching between two resident adapters vs reloading base + adapter; decode with an adapter vs
  base (adapters attached, none selected), vs the model with no adapter attached, with one-row steps on the
  unmerged sum (as before merged copies); what making the merged copies adds to the answer after a switch;
- memory: peak RSS of a Compare (two answers) vs one answer, RSS over 20 back-to-back chats, and the plan's
  estimate vs the measured peak (load + one picture chat) — each in a child process;
- eval: run_eval loglik vs generate (5 beams, 1 new token) on 20 one-picture questions (low detail).
Random weights never stop early: every answer is forced to its full length (min_new_tokens).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from vlmchat.models.families import detail_kwargs, profile_for  # noqa: E402
from vlmchat.models.manager import GenerationParams, ModelManager  # noqa: E402
from vlmchat.settings import load_settings  # noqa: E402

DECODE_TOKENS = 32
SECTIONS = ("decode", "dtype", "ttft", "caption", "adapter", "memory", "eval")


def model_folder(name: str) -> Path:
    """The built folder of `name` (built now when missing)."""
    import build

    folder = ROOT / "outputs" / "realsize" / name
    if not (folder / "model.safetensors").exists() and not list(folder.glob("*.safetensors")):
        build.build(name, folder)
    return folder


def picture(seed: int = 0, size: int = 512):
    """A 512x512 picture with some structure (random blocks), the same for a seed."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    return Image.fromarray(blocks).resize((size, size), Image.NEAREST)


def ask(text: str = "Describe the image.", image=None) -> list[dict]:
    content = ([{"type": "image", "image": image}] if image is not None else []) + [{"type": "text", "text": text}]
    return [{"role": "user", "content": content}]


def timed(function) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def interleaved(functions: dict, repeats: int) -> dict[str, float]:
    """Median seconds of each function, the runs interleaved so a busy machine slows all alike."""
    runs = {key: [] for key in functions}
    for _ in range(repeats):
        for key, function in functions.items():
            runs[key].append(timed(function))
    return {key: statistics.median(values) for key, values in runs.items()}


def row(model: str, measure: str, a: str, b: str, ratio: str, target: str = "") -> str:
    return f"| {model} | {measure} | {a} | {b} | {ratio} | {target} |"


class Bench:
    """One loaded model and the pieces every section uses."""

    def __init__(self, name: str, folder: Path, repeats: int, work: Path, dtype: str = "auto"):
        self.name, self.folder, self.repeats, self.work = name, folder, repeats, work
        self.manager = ModelManager(load_settings().override("model", dtype=dtype))
        self.manager.load(str(folder), quantization="none")
        self.force_length()

    @property
    def model(self):
        return self.manager.model

    @property
    def processor(self):
        return self.manager.processor

    def force_length(self) -> None:
        """Random weights: every answer runs to max_new_tokens (the app passes only max_new_tokens)."""
        self.model.generation_config.min_new_tokens = DECODE_TOKENS

    def inputs(self, conversation: list[dict], detail: str = "high"):
        """The processor's inputs for one conversation at `detail`."""
        return self.batch_inputs([conversation], detail)

    def batch_inputs(self, conversations: list[list[dict]], detail: str = "high"):
        """The processor's inputs for a left-padded batch of conversations at `detail`."""
        kwargs, _ = detail_kwargs(profile_for(self.model), self.processor, detail)
        self.processor.tokenizer.padding_side = "left"
        return self.processor.apply_chat_template(
            conversations, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt",
            processor_kwargs={"padding": True, **kwargs}).to(self.model.device)

    def direct(self, inputs, tokens: int) -> None:
        """`model.generate` called directly, under the model lock as all the app's model work is (its release
        frees this thread's OpenMP workers, `cpu_speed.ModelLock`, so the app's batcher thread is not slowed)."""
        import torch

        with self.manager.lock, torch.inference_mode():
            self.model.generate(**inputs, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)


def _in_thread(function) -> None:
    worker = threading.Thread(target=function)
    worker.start()
    worker.join()


def _with_streamer(bench: Bench, inputs, tokens: int) -> None:
    import torch
    from transformers import TextIteratorStreamer

    streamer = TextIteratorStreamer(bench.processor.tokenizer, skip_prompt=True, skip_special_tokens=True)

    def run():
        with torch.inference_mode():
            bench.model.generate(**inputs, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False,
                                 streamer=streamer)

    worker = threading.Thread(target=run)
    worker.start()
    for _ in streamer:
        pass
    worker.join()


def decode_rates(bench: Bench, variants: dict) -> dict[str, float]:
    """Decode tokens/s of each variant: (N - 1) tokens over the time N tokens take minus the time 1 token takes.

    One warm-up call each, then every (variant, length) interleaved with all the others.
    """
    for run in variants.values():
        run(2)
    runs = {(label, n): (lambda run=run, n=n: run(n)) for label, run in variants.items() for n in (DECODE_TOKENS, 1)}
    times = interleaved(runs, bench.repeats)
    return {label: (DECODE_TOKENS - 1) / max(times[label, DECODE_TOKENS] - times[label, 1], 1e-9)
            for label in variants}


def section_decode(bench: Bench) -> list[str]:
    conversation = ask("Write a long story about a red circle on a white background.")
    inputs = bench.inputs(conversation)
    manager, params = bench.manager, lambda n: GenerationParams(max_new_tokens=n)  # noqa: E731
    variants = {
        "model.generate, main thread": lambda n: bench.direct(inputs, n),
        "model.generate, in a thread": lambda n: _in_thread(lambda: bench.direct(inputs, n)),
        "model.generate, thread + TextIteratorStreamer": lambda n: _with_streamer(bench, inputs, n),
        "app: ModelManager.stream (Chat)": lambda n: list(manager.stream(conversation, params(n))),
        "app: ModelManager.generate (batcher)": lambda n: manager.generate(conversation, params(n)),
    }
    row_major = _row_major_weights(bench.model)
    if row_major:
        variants["model.generate, main thread, weights row-major (as loaded)"] = lambda n: _with_weights(
            row_major, lambda: bench.direct(inputs, n))
    rates = decode_rates(bench, variants)
    direct = rates["model.generate, main thread"]
    rows = [row(bench.name, f"decode tok/s: {label} vs direct", f"{rate:.1f}", f"{direct:.1f}",
                f"{rate / direct:.0%}", ">= 90%" if label.startswith("app") else "")
            for label, rate in rates.items() if label != "model.generate, main thread"]
    bound, detail = bandwidth_bound(bench)
    rows.append(row(bench.name, "decode vs memory-bandwidth bound", f"{direct:.1f} tok/s", f"{bound:.1f} tok/s",
                    f"{direct / bound:.0%}", f">= 50% ({detail})"))
    return rows


def _row_major_weights(model) -> dict:
    """parameter -> a row-major copy of it, for the weights the manager stored column-major (the app's CPU
    float32 layout, `manager.column_major_linears`); empty when none were or a copy would not fit in RAM."""
    import torch

    from vlmchat.models.plan import read_free_memory

    weights = {m.weight: None for m in model.modules() if type(m) is torch.nn.Linear and not m.weight.is_contiguous()}
    if sum(w.numel() * w.element_size() for w in weights) > (read_free_memory(False)["cpu"].free_gib - 4) * 2**30:
        return {}
    return {weight: weight.data.contiguous() for weight in weights}


def _with_weights(storage: dict, run) -> None:
    """Run with each parameter's data swapped for the tensor in `storage` (same values), then swapped back."""
    kept = {weight: weight.data for weight in storage}
    for weight, data in storage.items():
        weight.data = data
    try:
        run()
    finally:
        for weight, data in kept.items():
            weight.data = data


def bandwidth_bound(bench: Bench) -> tuple[float, str]:
    """Tokens/s if every decode step only read the weights once at this machine's copy bandwidth."""
    import torch

    source = torch.empty(256 * 2**20 // 4, dtype=torch.float32).normal_()
    target = torch.empty_like(source)
    seconds = statistics.median(timed(lambda: target.copy_(source)) for _ in range(7))
    bandwidth = 2 * source.numel() * 4 / seconds  # read + write
    model = bench.model
    embeddings = model.get_input_embeddings().weight
    read = sum(p.numel() * p.element_size() for n, p in model.named_parameters()
               if not any(part in n for part in ("vision", "visual", "connector", "merger")))
    tied = getattr(model.config.get_text_config(), "tie_word_embeddings", None)  # Qwen2-VL keeps it on the top config
    tied = model.config.tie_word_embeddings if tied is None else tied
    read -= embeddings.numel() * embeddings.element_size() if not tied else 0
    return bandwidth / read, f"{bandwidth / 1e9:.1f} GB/s copy / {read / 1e6:.0f} MB read per token"


def section_ttft(bench: Bench) -> list[str]:
    conversation = ask(image=picture(1))
    counts = {}

    def first_token(detail: str) -> None:
        inputs = bench.inputs(conversation, detail)
        counts[detail] = int((inputs["input_ids"] == bench.model.config.image_token_id).sum())
        bench.direct(inputs, 1)

    times = interleaved({"low": lambda: first_token("low"), "high": lambda: first_token("high")},
                        max(1, bench.repeats - 1))
    return [row(bench.name, "time to first token, one 512x512 picture: low vs high detail",
                f"{times['low']:.2f} s ({counts['low']} image tokens)", f"{times['high']:.2f} s ({counts['high']})",
                f"{times['high'] / times['low']:.1f}x faster", "<= 5 s at the CPU default (auto = low)")]


def section_dtype(bench: Bench) -> list[str]:
    """The dtype the plan chose on this CPU vs the other one, each model loaded as the app loads it (float32
    weights column-major): first token with one picture at low detail, and decode."""
    chosen = bench.manager.info.dtype
    other = ModelManager(load_settings().override("model", dtype="float32" if chosen == "bfloat16" else "bfloat16"))
    other.load(str(bench.folder), quantization="none")
    other.model.generation_config.min_new_tokens = DECODE_TOKENS
    conversation = ask(image=picture(1))
    inputs = {chosen: bench.inputs(conversation, "low")}
    inputs[other.info.dtype] = ModelManager._inputs(other.model, other.processor, [conversation],
                                                    other.detail("low"))
    models = {chosen: bench.model, other.info.dtype: other.model}

    def run(dtype, tokens):
        import torch

        with torch.inference_mode():
            models[dtype].generate(**inputs[dtype], max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)

    for dtype in models:
        run(dtype, 2)
    times = interleaved({(dtype, n): (lambda dtype=dtype, n=n: run(dtype, n)) for dtype in models
                         for n in (1, DECODE_TOKENS)}, bench.repeats)
    other.unload()
    rate = {dtype: (DECODE_TOKENS - 1) / (times[dtype, DECODE_TOKENS] - times[dtype, 1]) for dtype in models}
    second = next(dtype for dtype in models if dtype != chosen)
    return [row(bench.name, f"first token, one 512x512 picture (low detail): {chosen} (the plan's) vs {second}",
                f"{times[chosen, 1]:.2f} s", f"{times[second, 1]:.2f} s",
                f"{times[second, 1] / times[chosen, 1]:.2f}x faster"),
            row(bench.name, f"decode tok/s with that picture: {chosen} (the plan's) vs {second}", f"{rate[chosen]:.1f}",
                f"{rate[second]:.1f}", f"{rate[chosen] / rate[second]:.2f}x")]


def section_caption(bench: Bench) -> list[str]:
    """Captions batched vs one at a time, and the part that cannot batch: the vision tower, compute-bound on a CPU."""
    import torch

    conversations = [ask(image=picture(seed)) for seed in range(8)]
    params = GenerationParams(max_new_tokens=16, image_detail="low")
    bench.model.generation_config.min_new_tokens = 16
    batched, singles = bench.batch_inputs(conversations, "low"), [bench.inputs(c, "low") for c in conversations]
    inner = bench.model.model

    def encode(inputs) -> None:
        with torch.inference_mode():
            inner.get_image_features(pixel_values=inputs["pixel_values"],
                                     pixel_attention_mask=inputs.get("pixel_attention_mask"))

    try:
        times = interleaved({"batch": lambda: bench.manager.generate_batch(conversations, params),
                             "single": lambda: [bench.manager.generate_batch([c], params) for c in conversations],
                             "vision batch": lambda: encode(batched),
                             "vision single": lambda: [encode(one) for one in singles]},
                            bench.repeats)
    finally:
        bench.force_length()
    return [row(bench.name, "captions of 8 pictures (low detail, 16 tokens): batch 8 vs one at a time",
                f"{times['batch']:.2f} s", f"{times['single']:.2f} s", f"{times['single'] / times['batch']:.2f}x",
                ">= 1.5x"),
            row(bench.name, "of which the vision tower: 8 pictures in one batch vs one at a time",
                f"{times['vision batch']:.2f} s", f"{times['vision single']:.2f} s",
                f"{times['vision single'] / times['vision batch']:.2f}x "
                f"({times['vision single'] / times['single']:.0%} of one at a time)", "(why not)")]


def make_adapters(bench: Bench, folder: Path) -> dict[str, Path]:
    """Two LoRA adapters (the default config, non-zero B) for the loaded model, saved as PEFT folders."""
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForImageTextToText

    from vlmchat.lora.runtime import default_lora_config

    paths = {}
    for seed, name in enumerate(("one", "two")):
        base = AutoModelForImageTextToText.from_pretrained(bench.folder)
        peft_model = get_peft_model(base, default_lora_config(base))
        torch.manual_seed(seed)
        for parameter_name, parameter in peft_model.named_parameters():
            if "lora_B" in parameter_name:
                torch.nn.init.normal_(parameter, std=0.02)
        paths[name] = folder / name
        peft_model.save_pretrained(paths[name])
        del base, peft_model
    return paths


def section_adapter(bench: Bench) -> list[str]:
    from vlmchat.lora.runtime import use_adapter

    paths = make_adapters(bench, bench.work / "adapters")
    manager = bench.manager
    for name, path in paths.items():
        manager.load_adapter(name, path)
    model = manager.model

    def switch() -> None:
        for name in ("one", "two"):
            with use_adapter(model, name):
                pass

    def reload() -> None:
        manager.load(str(bench.folder), quantization="none")
        manager.load_adapter("one", paths["one"])

    switches = statistics.median(timed(switch) / 2 for _ in range(20))
    reloads = statistics.median(timed(reload) for _ in range(max(1, bench.repeats - 1)))
    rows = [row(bench.name, "adapter switch vs reload base + adapter", f"{switches * 1000:.2f} ms",
                f"{reloads * 1000:.0f} ms", f"{reloads / switches:.0f}x", ">= 100x")]
    for name, path in paths.items():  # reload left one adapter; put both back for the decode rows
        manager.load_adapter(name, path)
    bench.force_length()
    return rows + adapter_decode_rows(bench)


def adapter_decode_rows(bench: Bench) -> list[str]:
    """Decode with adapter 'one' active (on merged copies, unmerged) and with none (base); a switch's copies."""
    from vlmchat.lora.runtime import use_adapter

    model = bench.manager.model
    conversation = ask("Write a long story about a red circle on a white background.")
    inputs = bench.inputs(conversation)

    def decode_with(adapter):
        def run(tokens):
            with use_adapter(model, adapter):
                bench.direct(inputs, tokens)
        return run

    def decode_plain(tokens):
        """The model with no adapter attached: every LoRA layer swapped for the layer it wraps, for this call."""
        layers = [(model.get_submodule(name.rpartition(".")[0]), name.rpartition(".")[2], module)
                  for name, module in model.named_modules() if hasattr(module, "lora_A")]
        for parent, child, layer in layers:
            setattr(parent, child, layer.base_layer)
        try:
            decode_with(None)(tokens)
        finally:
            for parent, child, layer in layers:
                setattr(parent, child, layer)

    lora = [module for module in model.modules() if hasattr(module, "lora_A")]

    def unmerged_steps(tokens):
        """One-row steps on the unmerged sum, as before the merged copies (`runtime._lean_lora_linear`)."""
        chosen = lora[0].__dict__.get("_vlmchat_merge_steps")
        for layer in lora:
            layer.__dict__["_vlmchat_merge_steps"] = False
        try:
            decode_with("one")(tokens)
        finally:
            for layer in lora:
                layer.__dict__["_vlmchat_merge_steps"] = chosen

    rates = decode_rates(bench, {"base": decode_with(None), "adapter": decode_with("one"), "plain": decode_plain,
                                 "unmerged": unmerged_steps})
    base, adapter, plain, unmerged = rates["base"], rates["adapter"], rates["plain"], rates["unmerged"]
    kept, made = [], []  # a 9-token answer with adapter one's copies in place vs after a switch from two
    for _ in range(max(3, bench.repeats)):
        decode_with("two")(9)
        made.append(timed(lambda: decode_with("one")(9)))
        kept.append(timed(lambda: decode_with("one")(9)))
    kept, made = statistics.median(kept), statistics.median(made)
    return [
        row(bench.name, "decode tok/s with an adapter vs base", f"{adapter:.1f}", f"{base:.1f}",
            f"{1 - adapter / base:.0%} slower", "<= 5%"),
        row(bench.name, "decode tok/s with an adapter vs the model with no adapter attached", f"{adapter:.1f}",
            f"{plain:.1f}", f"{1 - adapter / plain:.0%} slower", "<= 5%"),
        row(bench.name, "decode tok/s with an adapter, one-row steps unmerged (before merged copies) vs base",
            f"{unmerged:.1f}", f"{base:.1f}", f"{1 - unmerged / base:.0%} slower", "<= 5%"),
        row(bench.name, "a 9-token answer after a switch (its merged copies made in it) vs with them in place",
            f"{made * 1000:.0f} ms", f"{kept * 1000:.0f} ms", f"+{(made - kept) * 1000:.0f} ms",
            f"(merged copies: {lora[0].__dict__.get('_vlmchat_merge_steps')})"),
    ]


def section_eval(bench: Bench) -> list[str]:
    from vlmchat.evaluate.run import EvalOptions, run_eval
    from vlmchat.evaluate.sets import EvalItem, EvalSet

    folder = bench.work / "eval"
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for index in range(20):
        path = folder / f"{index:02d}.png"
        picture(100 + index).save(path)
        items.append(EvalItem(f"q{index}", "What color is the shape?", (str(path),), ("red", "green", "blue", "yellow"),
                              index % 4))
    eval_set = EvalSet(str(folder), "benchmark", "choice", items)
    bench.model.generation_config.min_new_tokens = None  # the manager's default detail on a CPU: auto = low
    for name, path in make_adapters(bench, bench.work / "eval-adapters").items():
        bench.manager.load_adapter(name, path)
    beams = EvalOptions(batch_size=4, max_new_tokens=1, num_beams=5)
    models = ["base", "one", "two"]

    def run(names, method="loglik", options=EvalOptions(batch_size=4)):
        return run_eval(bench.manager, eval_set, names, method, options, folder=folder / "runs")

    try:
        times = interleaved({"loglik": lambda: run(["base"]), "generate": lambda: run(["base"], "generate", beams),
                             "one pass": lambda: run(models), "separate": lambda: [run([name]) for name in models]},
                            max(1, bench.repeats - 1))
    finally:
        bench.force_length()
    per = lambda key: f"{times[key] * 1000 / 20 / 3:,.0f} ms"  # noqa: E731 (per question per model)
    return [row(bench.name, "eval, 20 one-picture questions (low detail): loglik vs generate (5 beams, 1 token)",
                f"{times['loglik']:.1f} s", f"{times['generate']:.1f} s",
                f"{times['generate'] / times['loglik']:.1f}x faster", ">= 10x"),
            row(bench.name, "eval loglik, base + 2 adapters: one run vs 3 separate runs (per question per model)",
                per("one pass"), per("separate"), f"{times['separate'] / times['one pass']:.2f}x faster", "")]


CHILD = HERE / "memory_child.py"


def child(mode: str, folder: Path, work: Path) -> dict:
    """Run memory_child.py in a fresh process (peak RSS is per process) and return its JSON line."""
    done = subprocess.run([sys.executable, str(CHILD), mode, str(folder), str(work)], capture_output=True, text=True,
                          timeout=900)
    if done.returncode:
        raise RuntimeError(f"{mode}: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def section_memory(bench: Bench) -> list[str]:
    work = bench.work / "memory"
    work.mkdir(parents=True, exist_ok=True)
    make_adapters(bench, work)
    one, compare = child("one", bench.folder, work), child("compare", bench.folder, work)
    chats = child("chats", bench.folder, work)
    plan = child("plan", bench.folder, work)
    rss = chats["rss_gib"]
    return [
        row(bench.name, "peak RSS answering: Compare (base + adapter) vs one answer (low detail)",
            f"{compare['peak_gib']:.2f} GiB", f"{one['peak_gib']:.2f} GiB", f"{compare['peak_gib'] / one['peak_gib']:.3f}x",
            "<= 1.1x"),
        row(bench.name, "RSS after chat 20 vs after chat 1 (low detail, one picture each)", f"{rss[-1]:.2f} GiB",
            f"{rss[0]:.2f} GiB", f"{rss[-1] / rss[0]:.3f}x (max {max(rss):.2f})", "flat"),
        *(row(bench.name, f"plan estimate vs measured peak, load + one picture chat at {detail} detail",
              f"{plan[estimate]:.2f} GiB", f"{max(plan['load_peak_gib'], plan[peak]):.2f} GiB",
              f"{plan[estimate] / max(plan['load_peak_gib'], plan[peak]) - 1:+.0%}", "within 15%")
          for detail, estimate, peak in (("low (the CPU default)", "estimate_gib", "low_gib"),
                                         ("high", "estimate_high_gib", "high_gib"))),
        row(bench.name, "peak while loading / resident once loaded / peak answering at low / at high",
            f"{plan['load_peak_gib']:.2f} / {plan['loaded_gib']:.2f} GiB",
            f"{plan['low_gib']:.2f} / {plan['high_gib']:.2f} GiB", "", "(calibration input)"),
    ]


def run_model(name: str, sections: list[str], repeats: int, dtype: str = "auto") -> list[str]:
    """Every section on `name`; rows are printed as they are measured and returned."""
    folder = model_folder(name)
    with tempfile.TemporaryDirectory() as temp:
        bench = Bench(name, folder, repeats, Path(temp), dtype)
        print(f"{name}: {bench.manager.info.dtype} ({bench.manager.decision.plan.reason})", file=sys.stderr)
        rows = []
        for section in sections:
            started = time.perf_counter()
            found = globals()[f"section_{section}"](bench)
            print("\n".join(found), flush=True)  # as measured: a run cut short keeps what it had
            rows += found
            print(f"  {name} {section}: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
        bench.manager.unload()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", nargs="+", default=["smolvlm-256m"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated subset of {', '.join(SECTIONS)}")
    parser.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16"),
                        help="load dtype (auto: the app's plan; the memory section's child always uses auto)")
    args = parser.parse_args()
    sections = [s for s in args.only.split(",") if s]
    import torch

    print(f"torch threads: {torch.get_num_threads()}; peak RSS so far {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB",
          file=sys.stderr)
    print("| model | measure | this | compared with | ratio | target |\n|---|---|---|---|---|---|", flush=True)
    for name in args.model:
        run_model(name, sections, args.repeats, args.dtype)


if __name__ == "__main__":
    main()
