"""The Chat tab: multimodal chat with streaming, Stop, new chat and generation settings."""

from __future__ import annotations

import threading

import gradio as gr

from ..models.conversation import to_processor_messages
from ..errors import VlmchatError
from ..models.manager import GenerationParams, ModelManager
from ..settings import Settings

ERROR_MARK = "⚠️ "


def _without_failed_turns(history: list[dict]) -> list[dict]:
    """History minus error replies and the user turns that caused them, so one bad file is not resent."""
    kept: list[dict] = []
    for item in history or []:
        content = item.get("content") if isinstance(item, dict) else None
        if item.get("role") == "assistant" and isinstance(content, str) and content.startswith(ERROR_MARK):
            while kept and kept[-1].get("role") == "user":
                kept.pop()
            continue
        kept.append(item)
    return kept


def make_chat_fn(manager: ModelManager, settings: Settings):
    """The function behind the chat box and the `chat` API endpoint."""
    max_bytes = settings.server.max_upload_mb * 2**20

    def chat(message, history, max_new_tokens, temperature, top_p, seed):
        stop = threading.Event()
        try:
            messages = to_processor_messages(_without_failed_turns(history), message, max_bytes)
            params = GenerationParams(int(max_new_tokens), float(temperature), float(top_p), int(seed))
            text = ""
            for text in manager.stream(messages, params, stop, adapter=manager.active_adapter):
                yield text
            if not text.strip():
                yield ERROR_MARK + "The model returned an empty answer; rephrase the question or raise max new tokens."
        except VlmchatError as exc:
            yield ERROR_MARK + str(exc)
        finally:
            stop.set()

    return chat


def build_chat_tab(manager: ModelManager, settings: Settings, adapters) -> None:
    """Lay out the Chat tab inside the current Blocks."""
    gen = settings.generation
    with gr.Row():
        adapter = gr.Dropdown(choices=["base"] + adapters.names(), value=manager.active_adapter or "base",
                              label="Adapter", info="The LoRA adapter the answers use; 'base' = none.", scale=1)
        adapter_note = gr.Markdown()
    adapter.focus(lambda: gr.update(choices=["base"] + adapters.names()), outputs=adapter,
                  api_visibility="undocumented", queue=False)
    adapter.input(adapters.activate, adapter, adapter_note, api_visibility="undocumented")
    with gr.Accordion("Generation settings", open=False):
        with gr.Row():
            max_new_tokens = gr.Slider(1, 4096, value=gen.max_new_tokens, step=1, label="Max new tokens")
            temperature = gr.Slider(0.0, 2.0, value=gen.temperature, step=0.05, label="Temperature (0 = greedy)")
            top_p = gr.Slider(0.05, 1.0, value=gen.top_p, step=0.05, label="Top-p")
            seed = gr.Number(value=gen.seed, precision=0, label="Seed (-1 = random)")
    gr.ChatInterface(
        fn=make_chat_fn(manager, settings),
        multimodal=True,
        textbox=gr.MultimodalTextbox(file_types=["image"], file_count="multiple",
                                     placeholder="Attach an image and ask about it…", sources=["upload"]),
        chatbot=gr.Chatbot(height=480, label="Chat"),
        additional_inputs=[max_new_tokens, temperature, top_p, seed],
        api_name="chat",
        api_description="Chat about images: message {'text', 'files'} -> the answer text.",
        fill_height=False,
    )
