"""Print the quantization plan for every catalog model at common GPU sizes (no GPU needed).

Run: .venv/bin/python benchmarks/plan_table.py [--ram-gib 64] [--context 4096] [--images 1]
Each cell is the precision `plan_quantization` picks with its estimate (headroom included);
"+off" means it does not fit even in 4-bit, so it runs unquantized with part of the weights offloaded to system RAM
(bitsandbytes cannot offload a 4-bit or 8-bit model);
"refused" means it does not fit with offloading either.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vlmchat.models.plan import plan_quantization  # noqa: E402
from vlmchat.settings import load_settings  # noqa: E402
from vlmchat.models.sizes import size_from_catalog  # noqa: E402

SIZES_GIB = (6, 8, 12, 16, 24, 48, 80)


def cell(plan) -> str:
    if not plan.ok:
        return "refused"
    label = {4: "4-bit", 8: "8-bit"}.get(plan.bits, "bf16")
    return f"{label} {plan.estimate_gib:.1f}" + ("+off" if plan.offload_gib else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ram-gib", type=float, default=64.0, help="free system RAM assumed for offloading")
    parser.add_argument("--context", type=int, default=4096, help="context budget in tokens")
    parser.add_argument("--images", type=int, default=1, help="images per prompt")
    args = parser.parse_args()
    settings = load_settings()
    print(f"plan per free GPU memory (GiB); context {args.context} tokens, {args.images} image(s), "
          f"{args.ram_gib:g} GiB RAM for offload; cell = precision, GiB needed with headroom")
    header = f"{'model':34} {'params':>7} " + " ".join(f"{f'{gib} GiB':>15}" for gib in SIZES_GIB)
    print(header)
    print("-" * len(header))
    for entry in settings.catalog:
        size = size_from_catalog(entry)
        cells = [cell(plan_quantization(size, {"cuda:0": float(gib), "cpu": args.ram_gib},
                                        context_tokens=args.context, images=args.images)) for gib in SIZES_GIB]
        print(f"{size.name[:34]:34} {size.total_b:6.2f}B " + " ".join(f"{c:>15}" for c in cells))


if __name__ == "__main__":
    main()
