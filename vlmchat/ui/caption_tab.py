"""The Caption tab: caption one image, or a folder / many uploads / a zip in batches, with Cancel.

API endpoints: `caption(image, prompt, adapter) -> str` (prompt "" = caption.prompt from settings,
adapter "" = the active adapter, as Chat's, "base" = no adapter), `caption_batch(...)` -> (summary line, table, results zip) and
`caption_cancel()`. Folder paths on the server are refused when the app is reachable by others;
under a login each user's results go to a folder of their own (ui/users.py).
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import gradio as gr

from ..caption.io import CAPTION_SUFFIXES, FORMATS, caption_path, unpack_name, zip_files
from ..caption.run import (PRESETS, CaptionOptions, caption_image, caption_images,
                          find_images)
from ..errors import InputError, VlmchatError
from ..files import distinct_files
from ..models.manager import ModelManager
from ..settings import Settings
from .sharing import check_batch_upload, nothing_given, refuse_server_paths, verbatim
from .chat_tab import CHAT_EXAMPLES, EXAMPLES
from .users import login_of, session_of, user_folder

TABLE_HEADERS = ["image", "status", "caption or reason"]


def _batch_size(value) -> int | str:
    text = str(value if value is not None else "auto").strip().lower() or "auto"
    if text == "auto":
        return "auto"
    try:
        number = float(text)
    except ValueError:
        number = None
    if number is None or not number.is_integer():  # 2.5 was taken as 2, unsaid
        raise InputError(f"Batch size must be 'auto' or a whole number (got {value!r}).")
    return int(number)


def _copy_uploads(files: list[str], folder: Path) -> list[Path]:
    """Uploaded files copied under their own names into `folder` (a dataset to caption and download), each once."""
    folder.mkdir(parents=True, exist_ok=True)
    copies = []
    for source in distinct_files(Path(file) for file in files):
        target = folder / source.name
        counter = 1
        while target.exists():
            target = folder / f"{source.stem}-{counter}{source.suffix}"
            counter += 1
        shutil.copyfile(source, target)
        copies.append(target)
    return copies


class CaptionActions:
    """What the Caption tab does, kept apart from the layout so the API endpoints share it."""

    def __init__(self, manager: ModelManager, settings: Settings):
        self.manager, self.settings = manager, settings
        self.max_bytes = settings.server.max_upload_mb * 2**20
        self.cancels: dict[str, tuple[str | None, threading.Event]] = {}  # page -> (its login, its run's Cancel)
        self.failed: dict[str, str] = {}  # page -> why its last batch was refused, for its status line
        self.followed: dict[str | None, dict] = {}  # login -> its newest batch, as the login's other pages see it

    def chosen(self, adapter: str | None = None) -> str:
        """`adapter`, or for none named the active one (the Adapters tab's, as in Chat); 'base' = no adapter."""
        return (adapter or "").strip() or self.manager.active_adapter or "base"

    def caption(self, image, prompt: str, adapter: str) -> str:
        """One image's caption (the `caption` endpoint)."""
        return self.caption_with_start(image, prompt, "", adapter)

    def caption_with_start(self, image, prompt: str, start: str, adapter: str) -> str:
        """One image's caption, optionally forced to begin with `start`."""
        if not image:
            raise gr.Error("Upload an image first.")
        try:
            adapter = self.chosen(adapter)
            self.manager.attach_named_adapter(adapter)
            return caption_image(self.manager, image, prompt or "", start or "", adapter, self.max_bytes)
        except VlmchatError as exc:
            raise gr.Error(str(exc)) from None

    def cancel(self, request: gr.Request) -> str:
        """Ask this page's running batch to stop after its current batch; with none, the batches this login (or,
        without logins, the one local user) started from pages since closed or elsewhere."""
        own = self.cancels.get(session_of(request))
        others = [event for who, event in list(self.cancels.values()) if who == login_of(request)]  # runs end meanwhile
        for event in [own[1]] if own else others:
            event.set()
        if own:
            return "Cancelling after the current batch; everything captioned so far is kept."
        if others:
            return ("Cancelling the run started from another page (closed, or open elsewhere) after its current "
                    "batch; everything captioned so far is kept.")
        return "Nothing is running."

    def _inputs(self, folder: str, files, archive, recursive: bool, run: Path):
        """(images, scan failures, the JSONL/CSV path to use, whether uploads were copied into `run`)."""
        folder = (folder or "").strip()
        if len(folder) > 1 and folder[0] == folder[-1] and folder[0] in "\"'":  # as "Copy as path" gives it
            folder = folder[1:-1].strip()
        uploads = [str(f) for f in (files or []) if f]
        check_batch_upload(self.settings, uploads + ([str(archive)] if archive else []))
        if folder:
            refuse_server_paths(self.settings, "captioning")
            if Path(folder).expanduser().is_file():
                raise InputError(f"'{folder}' is a file, not a folder: upload it as an image (or a .zip), or give "
                                 "the folder it is in.")
            if not Path(folder).expanduser().is_absolute():  # it was read from the app's folder: captions went there
                raise InputError(f"Give the folder's full path ('{folder}' is not one), e.g. "
                                 f"{Path.home() / 'pictures'}.")
            if not Path(folder).expanduser().is_dir():
                raise InputError(f"Folder '{folder}' does not exist on this computer; check the path.")
        if not folder and not uploads and not archive:
            raise InputError(nothing_given(self.settings, "images or a zip", "the path of a folder"))
        given = [what for what, there in (("a folder", folder), ("uploaded images", uploads), ("a zip", archive))
                 if there]
        if len(given) > 1:  # a zip left in its box from the last run was captioned with the folder typed next
            raise InputError(f"Give one of a folder, uploaded images or a zip, not {' and '.join(given)}: clear the "
                             "one you do not mean (its × button) and press Caption all again.")
        if uploads and all(Path(f).suffix.lower() in CAPTION_SUFFIXES for f in uploads):
            raise InputError("The uploads are captions only: upload the pictures with them.")
        copies = _copy_uploads(uploads, run / "images") if uploads else []  # no empty run folder left behind
        paths = ([folder] if folder else []) + [str(p) for p in copies if p.suffix.lower() not in CAPTION_SUFFIXES]
        paths += [str(archive)] if archive else []
        found = find_images(paths, recursive=recursive, unpack_to=run / "images",
                            max_picture_bytes=self.max_bytes)
        uploaded = bool(uploads or archive)
        return found, (run if uploaded else Path(folder).expanduser()), uploaded

    def _results_zip(self, summary, fmt: str, run: Path, uploaded: bool, base: Path) -> Path | None:
        if uploaded:  # the run folder is a dataset: images with their captions
            files = [f for f in (run / "images").rglob("*") if f.is_file()]
            if summary.output:
                files.append(summary.output)
            return zip_files(files, run, run.with_suffix(".zip"))
        kept = [Path(image) for image, _ in summary.captioned + summary.skipped]
        files = [caption_path(p) for p in kept] if fmt == "txt" else [summary.output]
        return zip_files(files, base, run.with_suffix(".zip")) if files else None

    def caption_batch(self, folder=None, files=None, archive=None, prompt=None, start=None, adapter=None, format=None,  # noqa: A002 (the API's name)
                      overwrite=None, recursive=None, batch_size=None, prefix=None, suffix=None,
                      request: gr.Request = None,
                      progress=gr.Progress()):
        """Caption a folder, uploads or a zip; returns (summary line, table rows, results zip)."""
        session = session_of(request)
        cancel = threading.Event()
        self.cancels[session] = (login_of(request), cancel)
        stamp = time.strftime("%Y%m%d-%H%M%S-") + f"{time.time_ns() % 10**6:06d}"
        if archive and not (folder or "").strip() and not files:  # a zip alone: the same zip again resumes its run
            stamp = unpack_name(Path(str(archive)))  # (each run started afresh: a Cancel lost the work done)
        run = user_folder(self.settings.paths.resolve("outputs") / "captions", request) / stamp
        followed = {"line": "starting…", "result": None, "shown": {session}}

        def said(p) -> None:
            followed["line"] = p.line()
            progress((p.done, p.total), desc=p.line())

        try:
            fmt = format if format in FORMATS else self.settings.caption.format
            found, table_dir, uploaded = self._inputs(folder, files, archive, bool(recursive), run)
            adapter = self.chosen(adapter)
            self.manager.attach_named_adapter(adapter)
            options = CaptionOptions(prompt=prompt or "", start=start or "", prefix=prefix or "", suffix=suffix or "",
                                     adapter=adapter, fmt=fmt,
                                     output=None if fmt == "txt" else table_dir / f"captions.{fmt}",
                                     overwrite=bool(overwrite), batch_size=_batch_size(batch_size),
                                     max_bytes=self.max_bytes if uploaded else None)
            self.followed[login_of(request)] = followed  # a batch refused at once is none to follow
            progress(0, desc="starting…")
            summary = caption_images(self.manager, found.images, options, cancel=cancel, failed=found.failed,
                                     progress=said)
            results = self._results_zip(summary, fmt, run, uploaded, table_dir)
            followed["result"] = (summary.line(), summary.rows(run / "images" if uploaded else table_dir),
                                  str(results) if results else None)
        except VlmchatError as exc:
            if len(self.failed) > 100:  # an API client's never read (its page's failure line reads them)
                self.failed.pop(next(iter(self.failed)))
            self.failed[session] = str(exc)
            followed["result"] = (f"⚠️ {exc}", None, None)
            raise gr.Error(str(exc)) from None
        finally:
            self.cancels.pop(session, None)
            if followed["result"] is None:  # any other failure: the pages following it stop saying it runs
                followed["result"] = ("⚠️ The batch stopped on an error; the captions written are kept.", None,
                                      None)
        return followed["result"]

    def follow(self, request: gr.Request):
        """(status, table, download) of a page of the login whose newest batch another page started (the one that
        started it shows its own): while it runs, its progress; once it has ended, its summary, table and zip, once
        per page, as Fine-tune and Evaluate show their last run. A reload mid-run showed an idle tab, and the
        batch's end and results nowhere; a reload after it ended, nothing (UI testers)."""
        followed, session = self.followed.get(login_of(request)), session_of(request)
        if followed is None or session in followed["shown"]:
            return gr.skip(), gr.skip(), gr.skip()
        if followed["result"] is None:
            return (f"A batch started elsewhere (a page closed, reloaded or open elsewhere, or an API client) is "
                    f"running: {followed['line']}. Cancel stops it after its current batch; what is captioned is "
                    "kept."), \
                gr.skip(), gr.skip()
        followed["shown"].add(session)
        return followed["result"]

    def failure_line(self, request: gr.Request):
        """After a refused batch: the status line says why (the toast fades), and the status, table and download
        are drawn again, not left under Gradio's bare "Error" badges."""
        why = self.failed.pop(session_of(request), "The batch stopped on an error; the captions written are kept.")
        return f"⚠️ {why}", gr.update(), gr.update()

    def adapter_choices(self):
        """The model dropdown refreshed: 'base', the adapters that fit the model, the endpoints."""
        return gr.update(choices=self.manager.model_choices() or ["base"])


def active_adapter() -> gr.Textbox:
    """A hidden input for an API endpoint's `adapter`: '' (the active adapter) where the caller names none. The
    menu's value as the default said 'base' (the adapter active when the app was built) and captioned without the
    one activated since (API tester)."""
    return gr.Textbox(value="", visible=False, label="adapter")


def _single_section(actions: CaptionActions, settings: Settings):
    default = settings.caption.prompt
    with gr.Row():
        with gr.Column():
            preset = gr.Dropdown(list(PRESETS), value=next((k for k, v in PRESETS.items() if v == default), None),
                                 label="Preset", info="Fills the prompt; edit it to ask your own.")
            prompt = gr.Textbox(value=default, label="Prompt", lines=2)
            start = gr.Textbox(label="Start caption with", placeholder="A photo of",
                               info="Optional: every caption begins with this text.")
            adapter = gr.Dropdown(actions.manager.model_choices() or ["base"], value=actions.chosen(), label="Model",
                                  allow_custom_value=True, info="'base' = no adapter; endpoint:NAME = an API. "
                                                                "Opens on the adapter active in the Adapters tab.")
        with gr.Column():
            image = gr.Image(type="filepath", image_mode=None, label="Image", sources=["upload", "clipboard"])
            button = gr.Button("Caption", variant="primary")
            result = verbatim(gr.Textbox(label="Caption", buttons=["copy"]))
    gr.Examples([[str(EXAMPLES / picture)] for picture in dict.fromkeys(p for _, p in CHAT_EXAMPLES)
                 if (EXAMPLES / picture).is_file()], [image], label="Examples (click one, then Caption)")
    preset.input(lambda name: PRESETS.get(name, default), preset, prompt, api_visibility="private", queue=False)
    adapter.focus(actions.adapter_choices, outputs=adapter, api_visibility="private", queue=False)
    # A new picture clears the last one's caption (after a refused picture it read as the new one's).
    image.change(lambda: "", None, result, api_visibility="private", queue=False)
    # a page opened after an Activate opens on that adapter (a callable value would be an API endpoint of its own)
    gr.context.Context.root_block.load(actions.chosen, outputs=adapter, api_visibility="undocumented", queue=False)
    button.click(actions.caption_with_start, [image, prompt, start, adapter], result, api_visibility="private")
    api_trigger = gr.Button(visible=False)  # the stable 3-input endpoint, on the same components
    api_trigger.click(actions.caption, [image, prompt, active_adapter()], result, api_name="caption",
                      api_description="Caption one image: (image, prompt ''=default, adapter ''=the active one, "
                                      "'base'=none) -> str")
    return prompt, start, adapter


def build_caption_tab(manager: ModelManager, settings: Settings) -> CaptionActions:
    """Lay out the Caption tab inside the current Blocks."""
    actions = CaptionActions(manager, settings)
    prompt, start, adapter = _single_section(actions, settings)
    gr.Markdown("### Batch: a folder, many images, or a zip")
    exposed = settings.server.exposed
    folder = gr.Textbox(label="Folder on this computer", visible=not exposed,
                        placeholder="/path/to/images — captions go beside each image")
    if exposed:
        gr.Markdown("Folder paths are turned off because this app is reachable from other machines; upload instead.")
    with gr.Row():
        # Their .txt / .caption captions may come along (kept: those pictures are skipped unless Overwrite); a fixed
        # height, else 400 uploads listed one per row put Caption all 25,000 px down the page (caption reviewer).
        files = gr.File(file_count="multiple", file_types=["image", *CAPTION_SUFFIXES], type="filepath",
                        label="Upload images (and their .txt captions)", height=240)
        archive = gr.File(file_types=[".zip"], type="filepath", label="Upload a zip")
    with gr.Row():
        fmt = gr.Radio(list(FORMATS), value=settings.caption.format, label="Output",
                       info="txt: a .txt beside each image (kohya/TagGUI); jsonl/csv: one file")
        batch_size = gr.Textbox(value=str(settings.caption.batch_size), label="Batch size ('auto' or a number)")
        overwrite = gr.Checkbox(label="Overwrite existing captions")
        recursive = gr.Checkbox(label="Include subfolders")
    with gr.Row():  # what kohya's and TagGUI's users add to a LoRA dataset's every caption: its trigger word
        prefix = gr.Textbox(label="Prefix", placeholder="ohwx, ",
                            info="Written before every caption as it is (a trigger word; include its comma or space).")
        suffix = gr.Textbox(label="Suffix", placeholder=", studio photo", info="Written after every caption as it is.")
    with gr.Row():
        run = gr.Button("Caption all", variant="primary")
        cancel = gr.Button("Cancel", variant="stop")
    status = gr.Markdown(label="Status")
    table = gr.Dataframe(headers=TABLE_HEADERS, label="Summary", interactive=False, wrap=True,
                         column_widths=["30%", "10%", "60%"])  # a failure's reason ran off the panel
    download = gr.File(label="Results (zip)")
    batch = run.click(actions.caption_batch,
                      [folder, files, archive, prompt, start, adapter, fmt, overwrite, recursive, batch_size, prefix,
                       suffix], [status, table, download], api_name="caption_batch_tab", api_visibility="private",
                      concurrency_id="caption_batch")  # the endpoint's queue too: one model, batches sized alike
    api_batch = gr.Button(visible=False)  # the endpoint: the same, with the active adapter where none is named
    api_batch.click(actions.caption_batch, [folder, files, archive, prompt, start, active_adapter(), fmt, overwrite,
                                            recursive, batch_size, prefix, suffix], [status, table, download],
                    api_name="caption_batch", concurrency_id="caption_batch",
                    api_description="Caption a folder (local apps only), uploads or a zip -> (summary, table, zip)")
    batch.failure(actions.failure_line, None, [status, table, download], api_visibility="undocumented", queue=False)
    cancel.click(actions.cancel, None, status, api_name="caption_cancel", queue=False)
    gr.Timer(2.0).tick(actions.follow, None, [status, table, download], api_visibility="undocumented", queue=False)
    return actions
