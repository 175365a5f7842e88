"""Cold start: seconds from `python3 launch.py` to the first answered /chat request, median of 5.

It runs what the README says, as a user would: the system's `python3 launch.py` (which finds the
installed `.venv/` and re-runs itself there), on a free port, with settings pointing at temp folders,
then asks the demo model about a picture through gradio_client as soon as the page answers. Each
run also prints when the terminal showed its milestones, to see where the time goes.

Run: .venv/bin/python benchmarks/cold_start.py [--runs 5] [--python python3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from conftest import free_port, write_settings  # noqa: E402  (the tests' settings and ports)

TARGET_S = 6.0
MILESTONES = ("vlmchat: loading", "vlmchat: serving on", "vlmchat: demo (")


def _watch(process: subprocess.Popen, started: float, seen: dict, lines: list) -> None:
    """Record the first time each milestone line appears on the app's terminal."""
    for line in process.stdout:
        lines.append(line)
        for milestone in MILESTONES:
            if line.startswith(milestone) and milestone not in seen:
                seen[milestone] = time.monotonic() - started


def _wait_for_page(url: str, process: subprocess.Popen, lines: list, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the app exited with {process.returncode}:\n{''.join(lines)}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"no page within {timeout}s:\n{''.join(lines)}")


def cpu_seconds(pid: int) -> float | None:
    """CPU time the process (and the children it waited for) used so far, from /proc; None where there is none.

    On a shared machine the wall time depends on the other load; this does not.
    """
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return sum(int(value) for value in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def one_cold_start(folder: Path, picture: Path, python: str) -> tuple[float, dict]:
    """Seconds to the first answered chat, and when each milestone (and the page) appeared."""
    from gradio_client import Client, handle_file

    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    env = {k: v for k, v in os.environ.items() if k not in ("VLMCHAT_NO_BOOTSTRAP", "VIRTUAL_ENV")}
    env.update(GRADIO_ANALYTICS_ENABLED="False", PYTHONUNBUFFERED="1")
    seen: dict = {}
    lines: list = []
    started = time.monotonic()
    process = subprocess.Popen([python, "launch.py", "--settings", str(write_settings(folder)), "--port", str(port)],
                               cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    threading.Thread(target=_watch, args=(process, started, seen, lines), daemon=True).start()
    try:
        _wait_for_page(url, process, lines)
        seen["page"] = time.monotonic() - started
        client = Client(url, verbose=False)
        answer = client.predict({"text": "Describe the image.", "files": [handle_file(str(picture))]},
                                api_name="/chat")
        elapsed = time.monotonic() - started
        seen["cpu"] = cpu_seconds(process.pid)
        assert answer.strip() == "a red circle", answer
        return elapsed, seen
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--python", default="python3", help="the interpreter the user types (default python3)")
    options = parser.parse_args()
    picture = ROOT / "examples" / "red-circle.png"
    times, cpus = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(options.runs):
            folder = Path(tmp) / f"run{run}"
            folder.mkdir()
            elapsed, seen = one_cold_start(folder, picture, options.python)
            times.append(elapsed)
            cpu = seen.pop("cpu")
            if cpu is not None:
                cpus.append(cpu)
            marks = ", ".join(f"{name.removeprefix('vlmchat: ').rstrip(' (')} {at:.2f}"
                              for name, at in sorted(seen.items(), key=lambda item: item[1]))
            print(f"run {run + 1}: {elapsed:.2f} s (at: {marks}; app CPU time {cpu or 0:.2f} s)", flush=True)
    print(f"cold start, `{options.python} launch.py` to the first answered chat: median {statistics.median(times):.2f} s "
          f"over {options.runs} runs (min {min(times):.2f}, max {max(times):.2f}); target <= {TARGET_S:.0f} s")
    if cpus:
        print(f"CPU time the app used until then: median {statistics.median(cpus):.2f} s (what a quiet machine's wall "
              f"time approaches; load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
