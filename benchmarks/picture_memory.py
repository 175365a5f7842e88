"""Memory one chat answer adds for pictures at the header limits, against a 512 x 512 one, each in a fresh process.

Run: .venv/bin/python benchmarks/picture_memory.py [--model demo|PATH] [--detail high|low|auto]

For each picture (512 x 512 PNG; 7999 x 400 PNG, the 1:20 shape limit; 7999 x 7999 PNG and JPEG, under the
8000-pixel side and 64-megapixel limits) a child process loads the model, answers once about a small picture
(warm-up), then asks about the picture through the chat path (`chat_messages` decodes it, `ModelManager.answer`
runs the processor and the model) and prints the peak resident memory added (VmHWM after `clear_refs`) and what
the process still holds after the answer, and the process's peak against the 512 x 512 answer's (issue 18: within
~1.2x). Linux only (/proc).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PICTURES = {"512x512.png": (512, 512), "7999x400.png": (7999, 400), "7999x7999.png": (7999, 7999),
            "7999x7999.jpg": (7999, 7999)}


def _mib(key: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) // 1024
    raise KeyError(key)


def child(model: str, detail: str, picture: str, warm: str) -> None:
    sys.path.insert(0, str(ROOT))
    from vlmchat.models.conversation import chat_messages
    from vlmchat.models.manager import GenerationParams, ModelManager
    from vlmchat.settings import load_settings

    manager = ModelManager(load_settings(str(ROOT / "settings.toml")))
    manager.load(model)
    params = GenerationParams(max_new_tokens=8, image_detail=detail)

    def ask(path: str) -> str:
        turn = {"role": "user", "text": "Describe the image.", "images": [{"path": path, "name": Path(path).name}]}
        return manager.answer(chat_messages([turn], "", 25 * 2**20), params, None).text

    ask(warm)
    open("/proc/self/clear_refs", "w").write("5")  # VmHWM starts again from what is resident now
    base = _mib("VmRSS")
    ask(picture)
    print(f"{base} {_mib('VmHWM') - base} {_mib('VmRSS') - base}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo")
    parser.add_argument("--detail", default="high", choices=("high", "low", "auto"))
    args = parser.parse_args()
    from PIL import Image

    with tempfile.TemporaryDirectory() as folder:
        paths = {}
        for name, size in PICTURES.items():
            paths[name] = str(Path(folder) / name)
            Image.new("RGB", size, (230, 230, 230)).save(paths[name])
        print(f"model {args.model}, image detail {args.detail}; MiB added by one answer, one process each")
        print("| picture | file | peak added | still held after | process peak vs the 512x512 answer's |")
        print("|---|---:|---:|---:|---:|")
        normal = None
        for name, path in paths.items():
            out = subprocess.run([sys.executable, __file__, "--child", args.model, args.detail, path,
                                  paths["512x512.png"]], capture_output=True, text=True, check=True).stdout
            base, peak, kept = map(int, out.split()[-3:])
            normal = normal if normal is not None else base + peak
            print(f"| {name} | {Path(path).stat().st_size // 1024} KB | {peak} | {kept} | "
                  f"{(base + peak) / normal:.2f}x |")


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--child":
        child(*sys.argv[2:])
    else:
        main()
