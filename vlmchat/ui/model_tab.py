"""The Model tab: pick a catalog model or type a hub id / folder, see the files and the plan, then Load.

The token field is a password box; its value goes to huggingface_hub for this request only and
is never shown, logged or stored, unless "remember" is ticked (huggingface_hub's own login storage). An app
reachable from other machines does not offer "remember": the storage is the server account's.
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from ..hub import OfflineError, human_size, inspect_repo, is_offline
from ..errors import VlmchatError
from ..models.decide import decide_load
from ..models.manager import ModelManager
from ..models.resolve import ModelSource, resolve_model
from ..settings import DEMO_MODEL_ID, Settings
from .errors import said
from .sharing import refuse_model_path
from .users import login_of

WARN = "⚠️ "


def model_choices(settings: Settings) -> list[tuple[str, str]]:
    """(label, value) pairs for the model dropdown: the demo model, then the catalog."""
    choices = [("vlmchat demo (embedded, 1 M parameters)", DEMO_MODEL_ID)]
    for entry in settings.catalog:
        size = f"{entry.language_b + entry.vision_b:.2f} B" if entry.language_b >= 1 else \
            f"{(entry.language_b + entry.vision_b) * 1000:.0f} M"
        choices.append((f"{entry.title} ({size}{', gated' if entry.gated else ''})", entry.id))
    return choices


def _resolved(model: str | ModelSource, settings: Settings) -> ModelSource:
    return model if isinstance(model, ModelSource) else resolve_model(model, settings)


def describe_files(model: str | ModelSource, settings: Settings, token: str | None = None) -> str:
    """Markdown: what Load will download (file list, total size), or that the model is already local."""
    source = _resolved(model, settings)
    if source.kind in ("demo", "folder"):
        folder = source.path
        files = sorted(p for p in folder.iterdir() if p.is_file())
        total = sum(p.stat().st_size for p in files)
        where = "On the server" if settings.server.exposed else f"Local folder `{folder}`"
        return f"{where}: {len(files)} files, {human_size(total)}; nothing to download."
    repo_id = source.model_id
    where = "" if settings.server.exposed or source.path is None else f" in `{source.path}`"
    if is_offline():
        if source.path is None:  # the resolver looked in the cache already
            raise OfflineError(f"{repo_id} is not cached and offline mode is on (HF_HUB_OFFLINE=1).")
        return f"Offline: `{repo_id}` will load from the cache{where}."
    try:
        plan = inspect_repo(repo_id, token=token)
    except OfflineError:  # no connection: Load uses a fully cached model, as offline
        if source.path is None:
            raise
        return f"The hub cannot be reached: `{repo_id}` will load from the cache{where}."
    rows = "\n".join(f"| `{file.path}` | {human_size(file.size)} | {'cached' if file.cached else 'download'} |"
                     for file in plan.files)
    gated = f" Gated: access confirmed for the token from {plan.token_source}." if plan.gated else ""
    skipped = f"\n\nLeft out (not needed): {', '.join(plan.skipped[:8])}" if plan.skipped else ""
    return (f"**{repo_id}** @ `{plan.commit[:10]}`: {len(plan.files)} files, {human_size(plan.total_bytes)} "
            f"({human_size(plan.missing_bytes)} to download).{gated}\n\n| file | size | |\n|---|---|---|\n{rows}"
            f"{skipped}")


def describe_plan(model: str | ModelSource, quantization: str, settings: Settings, token: str | None = None) -> str:
    """Markdown: the decision Load will follow (precision, placement, device) with the reason."""
    decision = decide_load(_resolved(model, settings), settings, quantization, token=token)
    plan = decision.plan
    lines = [f"**Plan:** {decision.summary()}" if plan.ok else f"**Cannot load here:** {decision.reason}"]
    if plan.ok and plan.unquantized:
        lines.append(f"Left unquantized: {', '.join(f'`{p}`' for p in plan.unquantized)}")
    lines.append("Options: " + ", ".join(f"{label} ~{need:.1f} GiB" for label, need in plan.alternatives)
                 + f" (sizes from {decision.size.source})")
    return "  \n".join(lines)


def preview(model: str, token: str, quantization: str, settings: Settings) -> tuple[str, str]:
    """(files markdown, plan markdown) for the model picked; a problem is shown, not raised."""
    model = (model or "").strip()
    if not model:
        return WARN + "Pick a model from the list or type a hub id (owner/name) or a folder.", ""
    token = (token or "").strip() or None
    try:
        source = resolve_model(refuse_model_path(settings, model), settings)  # once: it looks in the hub cache
    except (VlmchatError, gr.Error) as exc:  # said once, under Files: the same line under Plan read twice
        return WARN + said(exc), ""
    out = []
    for describe in (lambda: describe_files(source, settings, token),
                     lambda: describe_plan(source, quantization, settings, token)):
        try:
            out.append(describe())
        except VlmchatError as exc:  # the hub out of reach failed both alike: said once, under Files
            out.append("" if out and out[0] == WARN + str(exc) else WARN + str(exc))
    return out[0], out[1]


def load_model(manager: ModelManager, model: str, token: str, remember: bool, quantization: str,
               progress=None) -> str:
    """Download if needed (with progress), free the current model, load the new one; returns a message."""
    model = (model or "").strip()
    if not model:
        raise gr.Error("Pick a model from the list or type a hub id (owner/name) or a folder.")
    model = refuse_model_path(manager.settings, model)
    token = (token or "").strip() or None
    report = (lambda fraction, text: progress(fraction, desc=text)) if progress is not None else None
    keep = remember and not manager.settings.server.exposed  # a visitor's token in the server account's login
    try:
        info = manager.load(model, quantization, token=token, progress=report, remember=keep)
    except VlmchatError as exc:
        raise gr.Error(str(exc)) from None
    refused = (" The token was used for this download only and not remembered: this app is reachable from other "
               "machines (whoever runs it can keep a token with `hf auth login` on the server)."
               if remember and not keep else "")
    return f"Loaded: {info.summary()}{refused}"


def loaded_model(manager: ModelManager, settings: Settings) -> str:
    """The model the dropdown shows: the one loaded now (model.id in settings while none is)."""
    info = manager.info
    return info.shown if info else settings.model.id


def build_model_tab(manager: ModelManager, settings: Settings, status: gr.Markdown, status_line) -> None:
    """Lay out the Model tab inside the current Blocks; Load also refreshes the `status` line."""
    with gr.Row():
        model = gr.Dropdown(model_choices(settings), value=loaded_model(manager, settings), allow_custom_value=True,
                            scale=3, label="Model: pick one, or type a hub id (owner/name)"
                            + ("" if settings.server.exposed else " or a local folder"))
        quantization = gr.Radio(["auto", "none", "8bit", "4bit"], value=settings.model.quantization,
                                label="Quantization (auto follows the plan)", scale=2)
    with gr.Row():
        kept = "used for this download only" if settings.server.exposed else "kept only if you tick Remember"
        token = gr.Textbox(type="password", label=f"Hugging Face token (gated models only; {kept})",
                           placeholder="hf_...  (empty: HF_TOKEN or your `hf auth login`)", scale=3)
        remember = gr.Checkbox(False, label="Remember this token (saved by huggingface_hub, as `hf auth login`)",
                               scale=2, visible=not settings.server.exposed)
    with gr.Row():
        check = gr.Button("Check files and plan")
        load = gr.Button("Load", variant="primary")
    files = gr.Markdown(label="Files")
    plan = gr.Markdown(label="Plan")
    result = gr.Markdown(label="Result")

    def on_preview(model, token=None, quantization=None):
        return preview(model, token, quantization or settings.model.quantization, settings)

    failed: dict[str, str] = {}  # session -> why its last Load failed, for the Result line

    def on_load(model, token=None, remember=False, quantization=None, progress=gr.Progress(),
                request: gr.Request = None):
        try:
            return load_model(manager, model, token, remember, quantization or settings.model.quantization, progress)
        except gr.Error as exc:
            if request is not None:
                failed[request.session_hash] = said(exc)
            raise

    def on_failed(request: gr.Request):
        """The Result line after a failed Load: why, and what is still loaded (not Gradio's bare "Error" badge)."""
        why = failed.pop(request.session_hash, "The model could not be loaded.")
        info = manager.info
        still = f" {info.shown} is still loaded and answering." if info else " No model is loaded."
        return WARN + why + still

    check.click(on_preview, [model, token, quantization], [files, plan], api_name="preview_model")
    model.input(on_preview, [model, token, quantization], [files, plan], api_visibility="undocumented")
    quantization.change(on_preview, [model, token, quantization], [files, plan], api_visibility="undocumented")
    # The status line is refreshed after Load, not one of its outputs: a failed Load left Gradio's error mark on it,
    # on every tab, while the model before was still loaded and answering (newcomer reviewer).
    loading = load.click(on_load, [model, token, remember, quantization], [result], api_name="load_model")
    loading.then(lambda: status_line(manager), outputs=[status], api_visibility="undocumented", queue=False)
    loading.failure(on_failed, outputs=[result], api_visibility="undocumented", queue=False)
    # The value above is the model loaded when the app was built; a page opened after another Load shows that one
    # (else Load, pressed as the page came, would bring the first model back).
    gr.context.Context.root_block.load(lambda: loaded_model(manager, settings), outputs=model,
                                       api_visibility="undocumented", queue=False)
    _endpoint_form(manager, settings)


def add_endpoint(manager: ModelManager, name: str, base_url: str, model: str, api_key: str, price_in: float,
                 price_out: float, max_concurrency: int, remember: bool, login: str | None = None) -> str:
    """Make an OpenAI-compatible server choosable as "endpoint:NAME" in Chat, Caption, Compare and Evaluate."""
    from ..models.endpoints import check_endpoint, check_key, remember_endpoint, shown_url

    if manager.settings.server.exposed:  # the server would fetch any URL a visitor types
        raise gr.Error("This app is reachable from other machines, so endpoints can only be added in settings.toml "
                       "([endpoints.NAME]) by whoever runs it.")
    if login is not None:  # an endpoint is the app's: one login's key served every login (API reviewer)
        raise gr.Error("With logins, an endpoint added here would serve every login with its key, so endpoints can "
                       "only be added in settings.toml ([endpoints.NAME]) by whoever runs the app.")
    key = (api_key or "").strip() or None
    try:
        entry = check_endpoint(name, base_url, model, price_in, price_out, max_concurrency)
        if key:
            check_key(key, "The API key")
    except VlmchatError as exc:
        raise gr.Error(str(exc)) from None
    replaced = " It replaces the endpoint of that name." if entry.name in manager.endpoint_settings() else ""
    choice = manager.add_endpoint(entry, api_key=key)
    remember_endpoint(manager.settings.paths.resolve("outputs"), entry, key, remember=bool(remember))
    kept = "kept for later starts (key in outputs/endpoints.json, readable by you only)" if remember else \
        "until vlmchat stops (the key stays in memory)"
    return (f"Added **{choice}** ({entry.model} at {shown_url(entry.base_url)}), {kept}; pick it in Chat, Caption, "
            f"Compare or Evaluate.{replaced}")


def _endpoint_form(manager: ModelManager, settings: Settings) -> None:
    with gr.Accordion("Add an endpoint (an OpenAI-compatible API: hosted, vLLM, Ollama, LM Studio, another vlmchat)",
                      open=False):
        with gr.Row():
            name = gr.Textbox(label="Name", placeholder="cluster")
            base_url = gr.Textbox(label="Base URL", placeholder="http://127.0.0.1:8000/v1", scale=2)
            model = gr.Textbox(label="Model (as the server names it)", placeholder="Qwen/Qwen2-VL-2B-Instruct", scale=2)
        with gr.Row():
            api_key = gr.Textbox(type="password", label="API key (empty: none needed)")
            price_in = gr.Number(0, label="USD per million input tokens (0 = not set)")
            price_out = gr.Number(0, label="USD per million output tokens")
            concurrency = gr.Number(4, precision=0, label="Requests in flight at most")
        remember = gr.Checkbox(False, label="Remember it (and its key) for later starts; never in settings.toml")
        add = gr.Button("Add endpoint")
        added = gr.Markdown(label="Added")
    def on_add(name, base_url, model, api_key=None, price_in=0.0, price_out=0.0, max_concurrency=4, remember=False,
               request: gr.Request = None):
        return add_endpoint(manager, name, base_url, model, api_key, price_in, price_out, max_concurrency, remember,
                            login_of(request))

    add.click(on_add,
              [name, base_url, model, api_key, price_in, price_out, concurrency, remember], added, api_name="add_endpoint")
