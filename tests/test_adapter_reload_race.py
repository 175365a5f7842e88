"""An adapter trained again over its folder is reloaded at its next use; an answer asked for meanwhile waits for it.

The /v1 server attaches the adapter a request names, then answers; a request answered between another
request's unload of the old weights and its load of the new found the adapter "not loaded". The reload now
holds the model's lock from the unload to the load.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from PIL import Image

from conftest import write_settings
from vlmchat.lora.store import WEIGHTS_FILE
from vlmchat.models.manager import GenerationParams, ModelManager
from vlmchat.settings import load_settings

RED_CIRCLE = Path(__file__).resolve().parent.parent / "examples" / "red-circle.png"


def test_an_answer_asked_for_during_a_reload_waits_for_the_new_weights(tmp_path, demo_model_path):
    manager = ModelManager(load_settings(write_settings(tmp_path)))
    manager.load()
    manager.attach_named_adapter("demo-es")
    weights = tmp_path / "adapters" / "demo-es" / WEIGHTS_FILE
    stamp = weights.stat()
    os.utime(weights, ns=(stamp.st_atime_ns, stamp.st_mtime_ns + 10**9))  # written again (a fine-tune with overwrite)

    in_gap, go_on, load = threading.Event(), threading.Event(), manager.load_adapter

    def slow_load(name, path):  # the old weights are unloaded; the new ones are about to be read
        in_gap.set()
        go_on.wait(10)
        load(name, path)

    manager.load_adapter = slow_load
    reloading = threading.Thread(target=manager.attach_named_adapter, args=("demo-es",))
    reloading.start()
    assert in_gap.wait(10)
    conversation = [{"role": "user", "content": [{"type": "image", "image": Image.open(RED_CIRCLE).convert("RGB")},
                                                 {"type": "text", "text": "Describe the image."}]}]
    found = {}

    def answer():
        try:
            found["answer"] = manager.answer_batch([conversation], GenerationParams(max_new_tokens=16), "demo-es")[0]
        except Exception as exc:  # noqa: BLE001 - the old code: "Adapter 'demo-es' is not loaded"
            found["error"] = exc

    asking = threading.Thread(target=answer)
    asking.start()
    asking.join(0.5)
    assert asking.is_alive() and not found  # it waits for the reload
    go_on.set()
    reloading.join(10)
    asking.join(30)
    assert "error" not in found, found.get("error")
    assert found["answer"].text == "un círculo rojo"
    manager.unload()
