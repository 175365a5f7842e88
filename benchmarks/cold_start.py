"""Cold start: seconds from `python launch.py` to the first answered /chat request, median of 5.

Run: .venv/bin/python benchmarks/cold_start.py [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from conftest import LaunchedApp  # noqa: E402  (the same launcher the tests use)


def one_cold_start(folder: Path, picture: Path) -> float:
    from gradio_client import Client, handle_file

    started = time.monotonic()
    app = LaunchedApp(folder)
    try:
        app.wait_ready(timeout=120)
        client = Client(app.url, verbose=False)
        answer = client.predict({"text": "Describe the image.", "files": [handle_file(str(picture))]},
                                api_name="/chat")
        elapsed = time.monotonic() - started
        assert answer.strip() == "a red circle", answer
        return elapsed
    finally:
        app.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args().runs
    from vlmchat.demo.heldout import heldout_pictures

    with tempfile.TemporaryDirectory() as tmp:
        picture = Path(tmp) / "red-circle.png"
        heldout_pictures(1)[0][0].save(picture)
        times = []
        for run in range(runs):
            folder = Path(tmp) / f"run{run}"
            folder.mkdir()
            times.append(one_cold_start(folder, picture))
            print(f"run {run + 1}: {times[-1]:.2f} s", flush=True)
    print(f"cold start to first answered chat: median {statistics.median(times):.2f} s over {runs} runs "
          f"(min {min(times):.2f}, max {max(times):.2f}); target <= 10 s")


if __name__ == "__main__":
    main()
