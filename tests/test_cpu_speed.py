"""CPU tunings of a loaded model: what they change (kernels, layout) and what they must not (values, the switch after)."""

import pytest
import torch
from transformers import AutoModelForImageTextToText

from vlmchat.models.cpu_speed import column_major_linears, one_row_steps_without_onednn

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="torch has no oneDNN here")


@pytest.fixture()
def bf16_demo(demo_model_path):
    return AutoModelForImageTextToText.from_pretrained(demo_model_path, dtype=torch.bfloat16).eval()


def _flags_seen(model):
    """oneDNN's switch as each forward of `model` finds it (a hook registered after the tuning's runs after it)."""
    seen = []
    model.register_forward_pre_hook(lambda module, args: seen.append(torch.backends.mkldnn.enabled))
    return seen


def test_one_row_decode_steps_run_without_onednn_and_the_switch_comes_back(bf16_demo):
    assert one_row_steps_without_onednn(bf16_demo)
    seen = _flags_seen(bf16_demo)
    ids = torch.tensor([[1, 8, 9, 10]])
    with torch.inference_mode():
        bf16_demo.generate(input_ids=ids, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert seen == [True, False, False, False]  # the prompt with oneDNN, each one-token step without
    assert torch.backends.mkldnn.enabled
    seen.clear()
    with torch.inference_mode():  # two rows: oneDNN is faster for every step
        bf16_demo.generate(input_ids=ids.repeat(2, 1), max_new_tokens=3, min_new_tokens=3, do_sample=False)
    assert seen == [True, True, True]


def test_a_failing_step_still_puts_onednn_back(bf16_demo):
    one_row_steps_without_onednn(bf16_demo)

    def fail(module, args):
        raise RuntimeError("out of memory in the middle of a step")

    bf16_demo.register_forward_pre_hook(fail)
    with pytest.raises(RuntimeError), torch.inference_mode():
        bf16_demo(input_ids=torch.tensor([[1]]))
    assert torch.backends.mkldnn.enabled


def test_float32_models_keep_onednn_and_get_column_major_weights_with_the_same_answers(demo_model_path):
    model = AutoModelForImageTextToText.from_pretrained(demo_model_path).eval()
    assert not one_row_steps_without_onednn(model)
    ids = torch.tensor([[1, 8, 9, 10]])
    with torch.inference_mode():
        before = model(input_ids=ids).logits
        assert column_major_linears(model) > 0
        after = model(input_ids=ids).logits
    linear = next(m for m in model.modules() if type(m) is torch.nn.Linear)
    assert linear.weight.t().is_contiguous() and not linear.weight.is_contiguous()  # same shape, transposed storage
    torch.testing.assert_close(after, before)


def _threads() -> int:
    import os

    return len(os.listdir("/proc/self/task"))


_LOCK_CHECK = """
import json, os, threading
import torch
from vlmchat.models.cpu_speed import ModelLock, _openmp_pause

threads = lambda: len(os.listdir("/proc/self/task"))
if torch.get_num_threads() < 2 or _openmp_pause() is None:
    print(json.dumps(None))
    raise SystemExit
lock, counts = ModelLock(), {}
big = torch.ones(8_000_000)

def work():
    with lock:
        with lock:  # re-entrant: the inner release keeps the team
            (big * 2).sum()
            counts["working"] = threads()
        (big * 2).sum()
        counts["inner released"] = threads()
    counts["released"] = threads()

worker = threading.Thread(target=work)
counts["before"] = threads()
worker.start()
worker.join()
counts["free"] = lock.acquire(timeout=1)
print(json.dumps(counts))
"""


@pytest.mark.skipif(not __import__("os").path.isdir("/proc/self/task"), reason="counts threads through Linux's /proc")
def test_letting_go_of_the_model_lock_frees_the_threads_openmp_workers():
    """A thread that ran torch kernels keeps OpenMP workers while it lives; more of them than cores slow every
    small kernel (the runtime stops spinning). The model lock frees the holder's on its last release. Counted in a
    fresh interpreter: the test process's own threads (apps and batchers of other tests) come and go meanwhile."""
    import json
    import subprocess
    import sys

    from conftest import ROOT

    done = subprocess.run([sys.executable, "-c", _LOCK_CHECK], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    counts = json.loads(done.stdout.strip().splitlines()[-1])
    if counts is None:
        pytest.skip("one torch thread, or no OpenMP runtime to pause here")
    before = counts["before"]
    assert counts["working"] == counts["inner released"] > before + 1  # this thread and its OpenMP worker(s)
    assert counts["released"] == before + 1                            # only the thread itself
    assert counts["free"]  # and the lock is free
