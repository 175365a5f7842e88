"""Absolute GPU figures for 7-11B models, random weights from their published configs, in one run.

Run on the device machine: python benchmarks/realsize/gpu_figures.py [--models ...] [--deadline-s 450]
Dry run here:              .venv/bin/python benchmarks/realsize/gpu_figures.py --dry-run
(--dry-run: the shrunk configs on the CPU, every step taken, no memory fraction, bitsandbytes' CPU backend;
the figures it prints mean nothing, it proves the script runs.)

Per model (Llama-3.2-11B-Vision-Instruct, Qwen2.5-VL-7B-Instruct, Chameleon-7B; built on the GPU, one at a
time, deleted after):
- plan: at simulated 8/12/16/24/80 GiB (torch.cuda.set_per_process_memory_fraction) the plan's choice is
  loaded with its own load_kwargs (offloaded layers too): does it load (or refuse) as the plan says, peak
  (allocated, and in use: reserved + CUDA context) vs the plan's need (load + one picture prefill), and
  decode tokens/s of that precision as a share of the HBM bound;
- train: QLoRA (4-bit nf4) and bf16 LoRA at batch 1, 1024 tokens, one picture, gradient checkpointing on
  and off: peak memory and samples/s;
  (--answer-tokens N: only the last N tokens are the answer, as a caption after a long prompt, with the
  fine-tune's answer-only loss; --kinds qlora: QLoRA only);
- eval (11B only): 100 one-picture multiple-choice questions by loglik through run_eval (--generate-questions N:
  also loglik vs generate at the write-up's setting, one question at a time, 5 beams, 1 new token, on N of them);
- adapter (11B only): switch between two resident adapters vs reload base + adapter;
- decode: bf16 tokens/s with the dynamic cache vs a static cache that `generate` compiles;
- compiled: Chat's decode through the model manager with [model] compile off vs auto (the first answer's compile,
  later answers of other lengths, an adapter between base answers).
An offloaded plan (layers in RAM) is loaded, then a prefill and 4 tokens timed. --budgets 8,80 limits the plan
section to those budgets.
Sections past --deadline-s are skipped and listed, so the run ends inside the device's time.
"""

from __future__ import annotations

import argparse
import gc
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))
sys.path.insert(0, str(HERE))

import build  # noqa: E402
from bench import ask, picture, timed  # noqa: E402

GIB = 2**30
BUDGETS = {"llama-3.2-11b-vision": (8, 12, 16, 24, 80), "qwen2.5-vl-7b": (8, 16, 80), "chameleon-7b": (8, 16, 80)}
DECODE_TOKENS = 32


class Run:
    """Device, deadline and the table being printed."""

    def __init__(self, dry: bool, deadline_s: float, work: Path):
        import torch

        self.dry, self.work = dry, work
        self.device = "cpu" if dry else "cuda"
        self.end = time.monotonic() + deadline_s
        self.rows: list[str] = ["| model | measure | value | compared with | note |", "|---|---|---|---|---|"]
        self.skipped: list[str] = []
        self.total_gib = 0.0 if dry else torch.cuda.get_device_properties(0).total_memory / GIB
        if not dry:  # what the process holds on the GPU before any tensor: the CUDA context and its libraries
            torch.empty(1, device="cuda")
            free, total = torch.cuda.mem_get_info()
            self.context_gib = (total - free) / GIB
        else:
            self.context_gib = 0.0

    def time_left(self, label: str) -> bool:
        if time.monotonic() < self.end:
            return True
        self.skipped.append(label)
        return False

    def add(self, *cells) -> None:
        self.rows.append("| " + " | ".join(str(c) for c in cells) + " |")
        print(self.rows[-1], flush=True)

    def reset_peak(self) -> None:
        import torch

        gc.collect()
        if not self.dry:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()

    def peak_gib(self) -> float:
        import resource

        import torch

        if self.dry:
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        return torch.cuda.max_memory_allocated() / GIB

    def process_peak_gib(self) -> float:
        """The peak the process held on the GPU: the allocator's reserved peak + the CUDA context."""
        import torch

        return self.peak_gib() if self.dry else torch.cuda.max_memory_reserved() / GIB + self.context_gib

    def hbm_gbps(self) -> float:
        """Copy bandwidth of the device (read + write), GB/s."""
        import torch

        source = torch.empty(2**28 if not self.dry else 2**24, device=self.device)
        target = torch.empty_like(source)
        sync = (lambda: None) if self.dry else torch.cuda.synchronize  # noqa: E731
        target.copy_(source), sync()
        seconds = statistics.median(timed(lambda: (target.copy_(source), sync())) for _ in range(10))
        return 2 * source.numel() * 4 / seconds / 1e9


def load_with(folder: Path, plan, dry: bool):
    """The model loaded with the plan's own from_pretrained kwargs (float32 on the CPU in a dry run)."""
    import torch
    from transformers import AutoModelForImageTextToText

    kwargs = {"dtype": torch.float32} if dry else plan.load_kwargs(folder)
    return AutoModelForImageTextToText.from_pretrained(folder, **kwargs).eval()


def prefill_inputs(processor, model, text: str = "Describe the image."):
    from vlmchat.models.families import profile_for

    profile = profile_for(model)
    template = {"chat_template": profile.chat_template} if profile.needs_template(processor) else {}
    inputs = processor.apply_chat_template([ask(text, picture(0))], add_generation_prompt=True, tokenize=True,
                                           return_dict=True, return_tensors="pt", **template).to(model.device)
    if "pixel_values" in inputs and inputs["pixel_values"].is_floating_point():
        inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
    return inputs


def decode_tok_s(run: Run, model, inputs, tokens: int = DECODE_TOKENS, repeats: int = 3, **generate_kwargs) -> float:
    """Decode tokens/s: the time from the first generated token to the last, stamped at each step of one
    `generate` (after one untimed call), the fastest of `repeats` calls."""
    import torch
    from transformers import StoppingCriteria

    class Stamps(StoppingCriteria):
        def __init__(self):
            self.times: list[float] = []

        def __call__(self, input_ids, scores, **kwargs):
            if not run.dry:
                torch.cuda.synchronize()
            self.times.append(time.perf_counter())
            return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

    def generate() -> float:
        stamps = Stamps()
        with torch.inference_mode():
            model.generate(**inputs, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False,
                           stopping_criteria=[stamps], **generate_kwargs)
        return (len(stamps.times) - 1) / (stamps.times[-1] - stamps.times[0])

    generate()
    return max(generate() for _ in range(repeats))


def section_plan(run: Run, name: str, folder: Path, budgets=None) -> None:
    """Each simulated budget: the plan, then load under the fraction and check it behaves as planned."""
    import torch
    from transformers import AutoProcessor

    from vlmchat.models.families import unquantized_modules
    from vlmchat.models.plan import plan_for_machine
    from vlmchat.models.sizes import size_from_folder

    size, processor = size_from_folder(folder, name), AutoProcessor.from_pretrained(folder)
    bandwidth = run.hbm_gbps()
    for budget in budgets or BUDGETS[name]:
        if not run.time_left(f"{name} plan at {budget} GiB"):
            return
        plan = plan_for_machine(size, vram_gib=budget, unquantized=unquantized_modules(build.model_config(name)))
        label = f"{plan.quantization if plan.bits < 16 else plan.dtype} (plan: {'ok' if plan.ok else 'refuses'})"
        if not plan.ok:
            run.add(name, f"plan at {budget} GiB", label, f"estimate {plan.estimate_gib:.1f} GiB", "refused: not loaded")
            continue
        run.reset_peak()
        if not run.dry:
            torch.cuda.set_per_process_memory_fraction(min(1.0, budget / run.total_gib))
        try:
            model = load_with(folder, plan, run.dry)
            inputs = prefill_inputs(processor, model)
            if plan.offload_gib:  # layers in RAM, brought to the GPU for each pass: a prefill and a few tokens
                with torch.inference_mode():
                    prefill = timed(lambda: (model(**inputs), None if run.dry else torch.cuda.synchronize()))
                speed = decode_tok_s(run, model, inputs, tokens=4, repeats=1)
                note = (f"{plan.offload_gib:.1f} GiB offloaded to RAM: prefill {prefill:.1f} s, decode {speed:.2f} tok/s "
                        f"(plan: {plan.reason[:120]})")
            else:
                speed = decode_tok_s(run, model, inputs)
                note = (f"decode {speed:.1f} tok/s = {speed * model.get_memory_footprint() / (bandwidth * 1e9):.0%} "
                        "of the HBM bound" if speed == speed else "decode not measured (32 tokens timed no slower than 1)")
            run.add(name, f"plan at {budget} GiB: loads; peak allocated / in use (reserved + CUDA context) vs the "
                    "plan's need", label, f"{run.peak_gib():.1f} / {run.process_peak_gib():.1f} vs {plan.estimate_gib:.1f} GiB",
                    note)
            del model, inputs
        except torch.OutOfMemoryError:
            run.add(name, f"plan at {budget} GiB", label, f"estimate {plan.estimate_gib:.1f} GiB", "OUT OF MEMORY")
        except Exception as error:  # noqa: BLE001 - the other budgets still run
            import traceback

            traceback.print_exc()
            run.add(name, f"plan at {budget} GiB: FAILED", label, f"estimate {plan.estimate_gib:.1f} GiB",
                    f"{type(error).__name__}: {str(error).splitlines()[0][:160] if str(error) else ''}")
        finally:
            if not run.dry:
                torch.cuda.set_per_process_memory_fraction(1.0)
            run.reset_peak()


def training_batch(processor, model, tokens: int = 1024, answer: int = 0):
    """One sample: a picture and text, `tokens` in all; labels = the text tokens (`answer` > 0: only the last
    `answer` of them, a caption after a long prompt)."""
    short = prefill_inputs(processor, model, "a")["input_ids"].shape[1]
    filler = processor.tokenizer("a red circle on a white background " * tokens, add_special_tokens=False)["input_ids"]
    keep = prefill_inputs(processor, model, processor.tokenizer.decode(filler[:max(1, tokens - short)]))
    labels = keep["input_ids"].clone()
    image_id = getattr(processor, "image_token_id", None)
    # image placeholders are not predicted (Mllama's <|image|> even lies outside the text vocabulary)
    labels[(labels == image_id) | (labels >= model.config.get_text_config().vocab_size)] = -100
    if answer:
        labels[:, :-answer] = -100
    keep["labels"] = labels
    return keep


def section_train(run: Run, name: str, folder: Path, kinds=("qlora", "lora"), answer: int = 0) -> None:
    """QLoRA and bf16 LoRA at batch 1, 1024 tokens, one picture, loaded as a fine-tune loads them
    (`finetune.model.load_for_training`) and in training mode: peak memory (the load's and the step's) and samples/s
    with gradient checkpointing on, then off, the plan's peak beside."""
    import torch

    from vlmchat.finetune.collate import batch_loss
    from vlmchat.finetune.model import load_for_training
    from vlmchat.finetune.setup import TrainingSetup, peak_gib
    from vlmchat.finetune.spec import JobSpec
    from vlmchat.models.sizes import size_from_folder

    spec = JobSpec(name="gpu-figures", data=str(folder), model_source=str(folder))
    for kind in kinds:
        if not run.time_left(f"{name} {kind}"):
            continue
        run.reset_peak()
        bits = 4 if kind == "qlora" else 16
        setup = TrainingSetup(run.device, "float32" if run.dry else "bfloat16", bits, gradient_checkpointing=True)
        model, processor = load_for_training(spec, setup, run.device)
        if bits != 4:  # a 4-bit model is placed while loading (and cannot be moved)
            model.to(run.device)
        model.train()  # as the fine-tune's loop does: checkpointing (and dropout) act in training mode only
        load_peak = run.peak_gib()
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        batch = training_batch(processor, model, answer=answer)
        tokens = batch["input_ids"].shape[1]

        def step():
            batch_loss(model, batch).backward()  # the fine-tune's loss: logits from the first answer token on
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if not run.dry:
                torch.cuda.synchronize()

        for checkpointing in (True, False):
            if not checkpointing:
                model.get_base_model().activation_checkpointing_disable()
            if not run.dry:
                torch.cuda.reset_peak_memory_stats()
            step()
            seconds = statistics.median(timed(step) for _ in range(3))
            plan = peak_gib(size_from_folder(folder), on_gpu=True, tokens=tokens, batch_size=1,
                            checkpointing=checkpointing, bits=bits)
            run.add(name, f"{kind} training, batch 1, {tokens} tokens ({f'the last {answer} the answer' if answer else 'all text in the loss'}), one picture, gradient checkpointing "
                    f"{'on' if checkpointing else 'off'}",
                    f"peak {max(load_peak, run.peak_gib()):.1f} GiB (load {load_peak:.1f}, step {run.peak_gib():.1f}; "
                    f"plan {plan:.1f})", f"{1 / seconds:.2f} samples/s",
                    "checkpointing on the language model" if checkpointing else "")
        del model, optimizer, batch
        run.reset_peak()


def section_eval_and_adapters(run: Run, name: str, folder: Path, questions: int, generate_questions: int = 0) -> None:
    """Loglik on `questions` one-picture questions and the adapter switch, through the model manager."""
    from vlmchat.evaluate.run import EvalOptions, run_eval
    from vlmchat.evaluate.sets import EvalItem, EvalSet
    from vlmchat.lora.runtime import use_adapter
    from vlmchat.models.manager import ModelManager
    from vlmchat.settings import load_settings

    if not run.time_left(f"{name} eval + adapters"):
        return
    manager = ModelManager(load_settings().override("model", device=run.device))
    manager.load(str(folder))
    items = []
    for index in range(questions):
        path = run.work / f"q{index:03d}.png"
        picture(index).save(path)
        items.append(EvalItem(f"q{index}", "What color is the shape?", (str(path),),
                              ("red", "green", "blue", "yellow"), index % 4))
    eval_set = EvalSet(str(run.work), "gpu", "choice", items)
    results = {}

    def evaluate(method, **options):
        result = run_eval(manager, eval_set, ["base"], method, EvalOptions(**options), folder=run.work / f"eval-{method}")
        results[method] = result

    seconds = timed(lambda: evaluate("loglik", batch_size=8))
    run.add(name, f"eval: {questions} one-picture questions, loglik", f"{seconds:.1f} s", "target < 60 s (11B)",
            manager.info.dtype)
    # The write-up's setting, as it ran: one generate() a question, 5 beams, 1 new token (same questions, same load).
    if generate_questions and run.time_left(f"{name} eval generate"):
        eval_set.items[:] = eval_set.items[:generate_questions]
        loglik = timed(lambda: evaluate("loglik", batch_size=8))
        generate = timed(lambda: evaluate("generate", batch_size=1, num_beams=5, max_new_tokens=1))
        run.add(name, f"eval: {generate_questions} one-picture questions, loglik (batches of 8) vs generate (one at a "
                "time, 5 beams, 1 new token)", f"{loglik:.1f} s vs {generate:.1f} s", f"{generate / loglik:.1f}x",
                "issue #12's real-size pair (target >= 10x)")
    for adapter in ("one", "two"):
        save_adapter(manager.model, run.work / adapter)
        manager.load_adapter(adapter, run.work / adapter)
    model = manager.model

    def switch():
        for adapter in ("one", "two"):
            with use_adapter(model, adapter):
                pass

    switches = statistics.median(timed(switch) / 2 for _ in range(10))
    reload = timed(lambda: (manager.load(str(folder)), manager.load_adapter("one", run.work / "one")))
    run.add(name, "adapter switch vs reload base + adapter", f"{switches * 1000:.2f} ms", f"{reload * 1000:.0f} ms",
            f"{reload / switches:.0f}x")
    manager.unload()


def section_decode(run: Run, name: str, folder: Path) -> None:
    """bf16 decode tokens/s as the app runs it (dynamic cache, eager) vs a static cache, which `generate` compiles
    on a GPU (torch.compile of the one-token step; the first call pays the compile), each as a share of the HBM bound."""
    import torch
    from transformers import AutoProcessor

    if not run.time_left(f"{name} decode"):
        return
    processor = AutoProcessor.from_pretrained(folder)
    model = load_with(folder, None, run.dry) if run.dry else _load_bf16(folder)
    inputs = prefill_inputs(processor, model)
    bound = run.hbm_gbps() * 1e9 / model.get_memory_footprint()
    eager = decode_tok_s(run, model, inputs, tokens=64)
    run.add(name, "decode bf16, dynamic cache (as the app runs it), 64 tokens", f"{eager:.1f} tok/s",
            f"{eager / bound:.0%} of the HBM bound ({bound:.0f} tok/s)", "")
    if run.time_left(f"{name} decode static"):
        started = time.monotonic()
        static = decode_tok_s(run, model, inputs, tokens=64, cache_implementation="static")
        run.add(name, "decode bf16, static cache (generate compiles the step), 64 tokens", f"{static:.1f} tok/s",
                f"{static / bound:.0%} of the HBM bound", f"{static / eager:.2f}x the dynamic cache; "
                f"{time.monotonic() - started:.0f} s in all, the compile's first call included; compiled: "
                f"{hasattr(model, '_compiled_call')}")
    del model


def section_compiled(run: Run, name: str, folder: Path) -> None:
    """Chat's decode through the model manager (`stream_answer`, as the Chat tab streams), bf16, with
    [model] compile = "off" (the dynamic cache) vs "auto" (vlmchat/models/compiled.py: a fixed-size static cache,
    the step compiled once): the first answer's wall time (the compile), then decode tok/s of answers to prompts
    of other lengths and another max new tokens (a recompile would show as seconds), an adapter's answer
    between two base answers, and whether greedy answers are the same tokens both ways."""
    import torch

    from vlmchat.models.manager import GenerationParams, ModelManager
    from vlmchat.settings import load_settings

    if not run.time_left(f"{name} compiled"):
        return
    settings = load_settings().override("model", device=run.device)
    manager = ModelManager(settings.override("model", compile="off"))
    manager.load(str(folder))
    manager.model.generation_config.eos_token_id = None  # random weights: no early end, every answer its length
    bound = run.hbm_gbps() * 1e9 / manager.model.get_memory_footprint()
    short, long = ask("Describe the image.", picture(0)), ask("Describe the image. " * 40 + "Be brief.", picture(1))

    def answer(conversation, tokens: int = 64, adapter=None):
        started = time.perf_counter()
        found = list(manager.stream_answer(conversation, GenerationParams(max_new_tokens=tokens), adapter=adapter))[-1]
        wall = time.perf_counter() - started
        speed = (found.completion_tokens - 1) / max(found.latency_s - found.first_token_s, 1e-9)
        return found, wall, speed

    def row(label, found, wall, speed):
        run.add(name, f"app decode, {label}", f"{speed:.1f} tok/s ({speed / bound:.0%} of the HBM bound)",
                f"{wall:.1f} s wall, first token {found.first_token_s:.2f} s, {found.completion_tokens} tokens, "
                f"prompt {found.prompt_tokens}", manager.settings.model.compile)

    answer(short)  # warm-up: first-call allocations
    off_short = answer(short)
    row("compile off, short prompt", *off_short)
    row("compile off, long prompt", *answer(long))
    manager.settings = settings.override("model", compile="auto")
    first = answer(short)
    row("compile auto, first answer (pays the compile)", *first)
    for label, args in (("compile auto, long prompt", (long,)), ("compile auto, short prompt again", (short,)),
                        ("compile auto, 200 new tokens", (long, 200))):
        row(label, *answer(*args))
    same = off_short[0].text == first[0].text
    run.add(name, "greedy answer, compile auto vs off (bf16, random weights)", "same text" if same else "differs",
            f"cache lengths compiled: {sorted(manager.compiled.ready)}", manager.compiled.broken or "")
    save_adapter(manager.model, run.work / "zero")
    manager.load_adapter("zero", run.work / "zero")
    row("compile auto, base answer after an adapter is attached", *answer(short))
    row("compile auto, the adapter's answer (dynamic cache)", *answer(short, adapter="zero"))
    row("compile auto, base answer after the adapter's", *answer(short))
    manager.unload()
    torch.cuda.empty_cache() if not run.dry else None


def _load_bf16(folder: Path):
    import torch
    from transformers import AutoModelForImageTextToText

    return AutoModelForImageTextToText.from_pretrained(folder, dtype=torch.bfloat16, device_map="cuda").eval()


def save_adapter(model, folder: Path) -> None:
    """A LoRA adapter (the default config, B = 0) for `model`, made on the meta device: no second copy of the weights."""
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForImageTextToText

    from vlmchat.lora.runtime import default_lora_config

    with torch.device("meta"):
        skeleton = AutoModelForImageTextToText.from_config(model.config)
    peft_model = get_peft_model(skeleton, default_lora_config(model))
    state = {key: torch.zeros(value.shape, dtype=torch.bfloat16)
             for key, value in peft_model.state_dict().items() if "lora_" in key}
    peft_model.save_pretrained(folder, state_dict=state)


SECTIONS = ("plan", "train", "eval", "decode", "compiled")


def guarded(run: Run, name: str, section: str, function, *args) -> None:
    """One section; a failure is a row of the table (with its traceback above it), and the next section runs."""
    import traceback

    try:
        function(run, *args)
    except Exception as error:  # noqa: BLE001 - one run on a lent machine: report and go on
        traceback.print_exc()
        run.add(name, f"{section}: FAILED", type(error).__name__, str(error).splitlines()[0][:160] if str(error) else "", "")
    finally:
        run.reset_peak()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="shrunk configs on the CPU (proves the script runs)")
    parser.add_argument("--models", nargs="+", default=list(build.GPU_MODELS), choices=build.GPU_MODELS)
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated subset of {', '.join(SECTIONS)}")
    parser.add_argument("--deadline-s", type=float, default=450.0, help="start no section after this many seconds")
    parser.add_argument("--questions", type=int, default=100)
    parser.add_argument("--work", type=Path, help="where the model folders are built (default: a temp folder)")
    parser.add_argument("--budgets", help="comma-separated GiB for the plan section (default: per model, 8 to 80)")
    parser.add_argument("--kinds", default="qlora,lora", help="training kinds: qlora, lora")
    parser.add_argument("--answer-tokens", type=int, default=0,
                        help="train with only the last N tokens as the answer (the fine-tune's answer-only loss)")
    parser.add_argument("--generate-questions", type=int, default=0,
                        help="also time generate (5 beams, 1 new token, one at a time) vs loglik on this many")
    args = parser.parse_args()
    sections = args.only.split(",")
    with tempfile.TemporaryDirectory(dir=args.work) as temp:
        run = Run(args.dry_run, args.deadline_s, Path(temp))
        for name in args.models:
            if not run.time_left(f"{name} (build)"):
                continue
            folder = Path(temp) / name
            built = timed(lambda: build.build(name, folder, shrink=args.dry_run, device=run.device))
            run.add(name, "built from the published config (random weights)", f"{built:.0f} s", "", str(folder))
            budgets = [float(b) for b in args.budgets.split(",")] if args.budgets else None
            if "train" in sections and not name.startswith("chameleon"):
                guarded(run, name, "train", section_train, name, folder, args.kinds.split(","), args.answer_tokens)
            if "plan" in sections:
                guarded(run, name, "plan", section_plan, name, folder, budgets)
            if "eval" in sections and name.startswith("llama"):
                guarded(run, name, "eval", section_eval_and_adapters, name, folder, args.questions,
                        args.generate_questions)
            if "decode" in sections:
                guarded(run, name, "decode", section_decode, name, folder)
            if "compiled" in sections:
                guarded(run, name, "compiled", section_compiled, name, folder)
            shutil.rmtree(folder, ignore_errors=True)
        print("\n".join(run.rows))
        if run.skipped:
            print(f"\nskipped (past --deadline-s {args.deadline_s:.0f}): {', '.join(run.skipped)}")


if __name__ == "__main__":
    main()
