"""The Evaluate tab and its API: did the adapter help? Base vs adapters on an eval set, with a verdict.

A run goes on in a thread of its own (the model lock is taken per batch, so Chat keeps answering);
the tab streams its progress and shows the table, the chart, the verdicts and the per-row CSV.
Under a login a run and its files belong to the user who started it (ui/users.py): nobody else
finds it by id, and its uploads and result files live in that user's own folders.
"""

from __future__ import annotations

import html
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr

from ..errors import InputError, VlmchatError, named
from ..evaluate.run import METHODS, EvalOptions, check_methods, check_models, eval_folder, run_eval
from ..evaluate.sets import read_eval_set
from ..finetune.uploads import PREFIX, resolve_dataset, store_upload
from ..lora.runtime import BASE
from ..models.families import IMAGE_DETAILS
from ..models.manager import ModelManager
from ..settings import PROJECT_ROOT, Settings
from .errors import guard as _guard, said
from .sharing import refuse_server_paths
from .uploads import given_data, upload_endpoint, user_uploads
from .users import login_of, session_of, user_folder


@dataclass
class EvalRun:
    """One run in progress or finished."""

    run_id: str
    owner: str | None = None  # the login that started it (None: no login)
    session: str = ""         # the page or API client that started it: '' in eval_status/eval_cancel means its own
    thread: threading.Thread | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    done: int = 0
    total: int = 0
    text: str = "starting"
    result: object = None
    error: str = ""
    format: str = ""
    set_problems: list = field(default_factory=list)
    form: tuple = ()  # the tab's models, methods, limit, detail, beams and new tokens it was started with


def _whole(value, what: str, default: int | None = None) -> int | None:
    """A count given to the tab or the API, as a whole number (2.5 questions ran 2, unsaid: blind tester); `default`
    when not given."""
    if value is None or value == "":
        return default
    try:
        number = float(value)
        if isinstance(value, bool) or number != int(number):
            raise ValueError
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"{what} must be a whole number (got {value!r}).") from None
    return int(number)


class EvalActions:
    """Start, follow and cancel eval runs; free of layout."""

    def __init__(self, manager: ModelManager, settings: Settings):
        self.manager, self.settings = manager, settings
        self.runs: dict[str, EvalRun] = {}
        self.lock = threading.Lock()

    def models(self) -> list[str]:
        """'base', every adapter that fits the loaded model, and every endpoint ("endpoint:NAME", generate only)."""
        return self.manager.model_choices() or [BASE]

    def refresh_models(self):
        """The Models box's choices now (an adapter trained or imported since the page was made included)."""
        return gr.update(choices=self.models())

    def start(self, data: str, models: list[str] | None = None, method="loglik", limit: int | None = None,
              batch_size: int = 8, image_detail: str = "", num_beams: int = 1, max_new_tokens: int | None = None,
              request=None) -> dict:
        """Read the set, check the models, and start the run in a thread; returns {"run_id", "format", ...}.

        `method`: "loglik", "generate", both ("loglik,generate" or a list); `num_beams` and `max_new_tokens` are
        generate's (the write-up's setting: 5 beams, 1 new token)."""
        models = [BASE] if models is None else [m for m in models if m]
        if not models:  # the tab with every box unticked ran the base, shown as unticked
            raise InputError("No model is ticked: tick the base, an adapter or an endpoint to evaluate.")
        if not data.startswith(PREFIX):
            refuse_server_paths(self.settings, "evaluation")
        limit = _whole(limit, "The item limit") or None  # 0: every question
        options = EvalOptions(batch_size=_whole(batch_size, "batch size", 8), limit=limit,
                              image_detail=image_detail or "", num_beams=_whole(num_beams, "num beams", 1),
                              max_new_tokens=_whole(max_new_tokens, "max new tokens") or None)  # 0: the default
        options.check()
        eval_set = read_eval_set(resolve_dataset(data, self.settings, user_uploads(self.settings, request)),
                                 limit=limit)
        eval_set.require_usable()
        methods = check_methods(eval_set, method, models)  # unknown, or loglik for an endpoint: said here
        folder = eval_folder(self.settings)
        folder = user_folder(folder.parent, request) / folder.name
        run = EvalRun(folder.name, login_of(request), session_of(request), total=len(eval_set.items),
                      format=eval_set.format,
                      set_problems=[str(p) for p in eval_set.problems])

        def progress(done, total, text):
            run.done, run.total, run.text = done, total, text

        check_models(self.manager, models)  # unknown or unfitting adapters fail here, before the thread

        def work():
            try:
                run.result = run_eval(self.manager, eval_set, models, methods, options, progress, run.cancel, folder)
            except VlmchatError as exc:
                run.error = str(exc)
            except Exception as exc:  # reported in the tab; the app keeps serving
                run.error = f"The evaluation failed: {named(exc)}"

        run.thread = threading.Thread(target=work, name=f"vlmchat-eval-{run.run_id}", daemon=True)
        with self.lock:
            self.runs[run.run_id] = run
        run.thread.start()
        return {"run_id": run.run_id, "format": eval_set.format, "questions": len(eval_set.items),
                "skipped_rows": len(eval_set.problems), "models": models, "method": "+".join(methods)}

    def run(self, run_id: str = "", request=None) -> EvalRun:
        """The login's run `run_id`, or with '' the newest run this page or client started; another login's is not
        found ('' found another client's run, and Cancel stopped it: verifying reviewer)."""
        owner, session = login_of(request), session_of(request)
        with self.lock:
            mine = [run for run in self.runs.values() if run.owner == owner]
            if not run_id:
                found = next((run for run in reversed(mine) if run.session == session), None)
            else:
                found = next((run for run in mine if run.run_id == run_id), None)
        if found is None:
            raise gr.Error(f"There is no evaluation run '{run_id}' in this app; start one with eval_start." if run_id
                           else "This page or client has started no evaluation; start one with eval_start, or give "
                                "the run_id of the one to follow.")
        return found

    def status(self, run_id: str = "", request=None) -> dict:
        """State, progress and, when finished, the table, verdicts, per-subject rows and file paths."""
        run = self.run(run_id, request)
        alive = run.thread is not None and run.thread.is_alive()
        # a run that scored no question failed, as the CLI's exit code 2 says (it read "done": blind tester)
        state = "running" if alive else "failed" if run.error or (run.result and run.result.nothing_scored()) else \
            "cancelled" if run.result is not None and run.result.cancelled else "done"
        stopped = run.result.stopped if run.result is not None and not alive else {}
        message = run.error or "; ".join(f"{name} was stopped, the other models went on: {why}"
                                         for name, why in stopped.items())
        if not alive and not message and run.result is not None:
            message = run.result.nothing_scored()
        out = {"run_id": run.run_id, "state": state, "done": run.done, "total": run.total, "progress": run.text,
               "format": run.format, "set_problems": run.set_problems, "message": message}
        if not alive and run.result is not None:
            result, folder = run.result, run.result.folder
            # the rows each model skipped too: the tab showed "problems 4" and no reason (outside reviewer)
            out["problems"] = result.problems()
            out.update(table={"headers": result.table_headers(), "data": result.table()},
                       subjects=result.subject_table(), verdicts=[text for text, _ in result.verdicts()],
                       next_steps=result.next_steps(),
                       metric=result.metric_reason(), csv=str(folder / "results.csv"),
                       chart=str(folder / "chart.png"), summary=str(folder / "summary.json"), command=result.command())
        return out

    def cancel(self, run_id: str = "", request=None) -> str:
        """Stop a run after its current batch; what is scored is kept and reported."""
        run = self.run(run_id, request)
        if run.thread is None or not run.thread.is_alive():
            ended = "was cancelled" if run.result is not None and run.result.cancelled else \
                "failed" if run.error else "has finished"
            return f"Evaluation {run.run_id} is not running (it {ended})."
        run.cancel.set()
        return f"Cancelling evaluation {run.run_id}: it stops after the current batch and keeps what is scored."


SUBJECT_COLUMNS = ["subject", "model", "scored", "accuracy %"]
RUN_KEY = "vlmchat-eval-run"  # sessionStorage: the run a browser tab follows, followed again after a reload
EVAL_RUNS = 4  # runs followed at once (each takes the model lock per batch, so they take turns batch by batch)
RESULTS_LABEL, CSV_LABEL = "Results", "Per-row results (CSV)"
EARLIER = " of the previous run, not this one"  # the labels of an earlier run's results kept on screen


def _report(status: dict) -> tuple:
    """(progress markdown, table rows, verdict markdown, subject rows, chart path, csv path) for the tab."""
    shown = status["progress"] if status["state"] == "running" else \
        " · ".join(part.replace("none scored yet", "none scored") for part in status["progress"].split(" · ")
                   if not part.startswith("ETA"))
    head = f"**{status['state']}** · {shown}"
    if status.get("format"):
        head = f"{status['format']} · " + head
    # Messages quote the user's files ("<image 1>", a row's text): shown as text, not read as HTML.
    if status.get("message"):
        head += f"  \n⚠️ {html.escape(status['message'])}"
    problems = status.get("problems", status.get("set_problems"))
    if problems:
        count = len(problems)
        shown = "\n".join(f"- {html.escape(p)}" for p in problems[:10])
        more = f"\n- … and {count - 10} more (every one in the CSV's problem column)" if count > 10 else ""
        head += f"  \n{count} {'row' if count == 1 else 'rows'} skipped:\n{shown}{more}"
    if "table" not in status:
        return head, gr.update(value=None, label=RESULTS_LABEL), "", None, None, gr.update(value=None, label=CSV_LABEL)
    verdicts = "\n".join(f"- {v}" for v in status["verdicts"]) or "- (tick the base and an adapter for a verdict)"
    verdict = f"**Verdict** ({status['metric']}):\n{verdicts}"
    if status.get("next_steps"):
        verdict += "\n\n**Next:**\n" + "\n".join(f"- {step}" for step in status["next_steps"])
    import pandas as pd

    subjects = gr.update(value=None, visible=False)  # a set without subjects has no per-subject table
    if status["subjects"]:
        subjects = gr.update(value=pd.DataFrame(status["subjects"], columns=SUBJECT_COLUMNS),
                             visible=True)
    table = pd.DataFrame(status["table"]["data"], columns=status["table"]["headers"])
    # labelled each time: a refused Evaluate labels the results it leaves on screen as the previous run's
    return head, gr.update(value=table, label=RESULTS_LABEL), verdict, subjects, status["chart"], \
        gr.update(value=status["csv"], label=CSV_LABEL)


def _not_run(message: str, earlier: dict | None) -> tuple:
    """(progress, table, verdict, subjects, chart, csv) when Evaluate started nothing: every refusal says so alike.

    The previous run's results (`earlier`, its eval_status; None when there is none or it is gone) stay, headed and
    labelled as that run's: they stayed below a new warning as if they were this attempt's (blind tester), and
    clearing them lost a whole run's results to a typo in Beams (reviewer). Without them every output is emptied."""
    warning = f"⚠️ {html.escape(message, quote=False)}" if message else ""  # "<image 1>" is text
    if earlier and earlier["state"] == "running":  # its results are what it is doing now, followed still
        return warning, *[gr.skip()] * 5
    if not earlier or "table" not in earlier:
        return warning, gr.update(value=None, label=RESULTS_LABEL), "", gr.update(value=None), None, \
            gr.update(value=None, label=CSV_LABEL)
    _, table, verdict, subjects, chart, csv = _report(earlier)
    said_earlier = f"evaluation {earlier['run_id']}" + (f", {earlier['format']}" if earlier.get("format") else "")
    warning += f"  \nNothing was evaluated this time; the results below are the previous run's ({said_earlier})."
    return (warning, gr.update(value=table["value"], label=RESULTS_LABEL + EARLIER),
            verdict.replace("**Verdict**", "**The previous run's verdict**", 1), subjects, chart,
            gr.update(value=csv["value"], label=CSV_LABEL + EARLIER))


EXAMPLE_SET = PROJECT_ROOT / "examples" / "eval" / "shapes.jsonl"


def build_evaluate_tab(manager: ModelManager, settings: Settings) -> EvalActions:
    """Lay out the Evaluate tab inside the current Blocks and register the eval_* API endpoints."""
    actions = EvalActions(manager, settings)
    tab = gr.context.Context.block  # the Evaluate tab this is laid out in
    gr.Markdown("Did the adapter help? Score the base model and your adapters on the same questions "
                "(multiple choice by log-likelihood, in seconds) and get each adapter's difference from the base "
                "with a paired significance test. Eval sets: vlmchat JSONL/CSV rows, MMLU CSV, MMMU rows, "
                "or captioned images (see README, Evaluate).")
    with gr.Row():
        # No file_types: the browser dropped a file of another kind (gen.py) from the box unsaid, and Evaluate then
        # asked for an upload (blind tester); the server takes it and says which kinds it takes (store_upload
        # refuses every other kind, and checks a zip's members, whatever the browser sends).
        upload = gr.File(label="Eval set: a .jsonl/.json/.csv/.parquet file (pick its pictures with it), a .zip, "
                               "or pictures with their .txt captions", file_count="multiple",
                         height=240)  # a set's 100 pictures listed one per row pushed Evaluate far down
        local = not settings.server.exposed  # each hidden itself too: a shared page's config names no server path
        with gr.Column(visible=local):
            path = gr.Textbox(label="…or a file, folder or .zip on this computer", visible=local)
            # something to try before writing a set of one's own: 24 questions on the demo's kind of pictures
            example = gr.Button(f"Use the example set ({EXAMPLE_SET.relative_to(PROJECT_ROOT).as_posix()})",
                                size="sm", visible=local)
    with gr.Row():
        models = gr.CheckboxGroup(actions.models(), value=actions.models()[:2], label="Models (base, adapters, endpoints)")
        refresh = gr.Button("Refresh list", scale=0)
        method = gr.CheckboxGroup(list(METHODS), value=["loglik"],
                                  label="Method (loglik: no sampling; generate: parse the answer; both: compared)",
                                  # an adapter that wrote runs of dots scored 83% vs the base's 88% by loglik: "not
                                  # significant" read as harmless (closed-loop reviewer)
                                  info="loglik only ranks the given options: it does not see how a model words a "
                                       "free answer; check that with generate, or with a caption set (captions are "
                                       "always generated)")
        limit = gr.Number(value=None, label="Only N questions, taken in turn from each subject (0 = all)")
        detail = gr.Radio(list(IMAGE_DETAILS), value=settings.generation.image_detail, label="Image detail",
                          info="as in Chat: low is fast on a CPU")
    with gr.Accordion("Generate settings (the generate method and captions)", open=False):
        with gr.Row():
            # no minimum/maximum: Gradio refused a value out of them before the handler, with an error badge on every
            # output and the last run's results gone; EvalOptions.check says it in one line (blind tester)
            beams = gr.Number(value=1, label="Beams (1 = greedy; the write-up used 5)")
            new_tokens = gr.Number(value=0, label="New tokens (0: 16 for questions, 64 for captions)",
                                   # 5 beams, 1 token scored a demo that answers "a red circle" by its "a" (reviewer)
                                   info="1 fits only a letter or one-word answer: an answer that starts 'a …' is "
                                        "cut to 'a' and counted wrong")
    with gr.Row():
        start = gr.Button("Evaluate", variant="primary")
        cancel = gr.Button("Cancel", variant="stop")
    progress = gr.Markdown(elem_id="vlmchat-eval-progress")
    verdict = gr.Markdown(elem_id="vlmchat-eval-verdict")
    # headed before a run too: an empty table read "1 | 2 | 3" (closed-loop reviewer)
    table = gr.Dataframe(headers=["model", "accuracy %", "95% interval", "ms/question", "scored", "problems"],
                         label=RESULTS_LABEL, interactive=False)
    with gr.Row():
        # no label badge: it covered the chart's own title (the set, method and count), outside reviewer
        chart = gr.Image(label="Chart: each model's score in the verdict's metric", show_label=False, type="filepath",
                         interactive=False)
        subjects = gr.Dataframe(headers=SUBJECT_COLUMNS, label="Per subject", interactive=False)
    csv = gr.File(label=CSV_LABEL, interactive=False)
    # the run this browser tab follows, kept in its sessionStorage: a reload followed it no more (blind tester)
    run_id = gr.Textbox(visible="hidden", max_lines=1, elem_id="vlmchat-eval-run")

    def reference(file, typed, request) -> str:
        return given_data(settings, file, typed, request, "eval set", "evaluation", "an eval set",
                          "the path of a file or folder")

    def refused(message: str, previous: str, request) -> tuple:
        """The outputs of an Evaluate that started nothing (every such path): `message`, and the page's previous
        run `previous` shown as that run's (`_not_run`); the page goes on following that run."""
        try:
            earlier = actions.status(previous, request) if previous else None
        except gr.Error:  # the app was started again since: its runs are gone
            earlier, previous = None, ""
        return previous, *_not_run(message, earlier)

    def do_start(file, typed, chosen, how, first_n, level, width, tokens, previous="", request: gr.Request = None):
        try:
            started = actions.start(reference(file, typed, request), chosen, how, first_n, image_detail=level,
                                    num_beams=width, max_new_tokens=tokens,
                                    request=request)
        except (VlmchatError, gr.Error) as exc:  # said in one line, no error badges
            yield refused(said(exc), previous, request)
            return
        actions.run(started["run_id"], request).form = (chosen, how, first_n, level, width, tokens)
        yield from follow(started["run_id"], request)

    def restore_form(remembered: str, request: gr.Request = None):
        """The form as the run this browser tab follows was started: a reload showed its results beside the
        defaults (its adapter and generate unticked), and Evaluate then ran another set-up (loop tester)."""
        try:
            form = actions.run(remembered, request).form if remembered else ()
        except gr.Error:  # the app was started again since
            form = ()
        if not form:
            return (gr.skip(),) * 6
        chosen, *rest = form
        choices = actions.models()
        return gr.update(choices=choices, value=[name for name in chosen if name in choices]), *rest

    def check_upload(file, previous, request: gr.Request = None):
        """An uploaded file Evaluate would not take is said as it arrives, with the kinds it takes (gen.py was
        dropped from the box unsaid by the box's own file-type filter, and Evaluate then asked for an upload:
        blind tester). The upload is stored as Evaluate stores it (the same files again are the same folder)."""
        if file:
            try:
                store_upload(file, settings, user_uploads(settings, request), "eval set")
            except (VlmchatError, gr.Error) as exc:
                return refused(said(exc), previous, request)
        return (gr.skip(),) * len(outputs)

    def follow(current: str, request):
        while True:
            status = actions.status(current, request)
            yield current, *_report(status)
            if status["state"] != "running":
                return
            time.sleep(0.5)

    def reattach(remembered: str, request: gr.Request = None):
        """The run this browser tab followed before a reload, followed again (its results once it has ended)."""
        try:
            yield from follow(remembered, request) if remembered else iter([(gr.skip(),) * len(outputs)])
        except gr.Error:  # the app was started again since: its runs are gone
            yield refused("", "", request)

    outputs = [run_id, progress, table, verdict, subjects, chart, csv]
    gr.context.Context.root_block.load(reattach, run_id, outputs, api_visibility="undocumented",
                                       concurrency_id="eval-runs", concurrency_limit=EVAL_RUNS,
                                       js=f"(id) => [sessionStorage.getItem('{RUN_KEY}') || '']")
    run_id.change(None, run_id, None, js=f"(id) => {{ sessionStorage.setItem('{RUN_KEY}', id || ''); return []; }}")
    gr.context.Context.root_block.load(restore_form, run_id, [models, method, limit, detail, beams, new_tokens],
                                       api_visibility="undocumented", queue=False,
                                       js=f"(id) => [sessionStorage.getItem('{RUN_KEY}') || '']")
    # The run works in a thread; this event only follows it, so runs of other pages need not queue behind it (a
    # second page's Evaluate waited "queue: 1/1" for the whole first run, outside reviewer).
    start.click(do_start, [upload, path, models, method, limit, detail, beams, new_tokens, run_id], outputs,
                api_visibility="undocumented", concurrency_id="eval-runs", concurrency_limit=EVAL_RUNS)
    # not one at a time for the whole app: a big zip is unpacked here (once: Evaluate finds it unpacked)
    upload.upload(check_upload, [upload, run_id], outputs, api_visibility="undocumented", concurrency_limit=None)
    def do_cancel(current, request: gr.Request = None):
        if not current:  # '' is "the newest run" to the API: a page that started none stopped another page's run
            return "Nothing to cancel: this page has not started an evaluation (a run started in another page is " \
                   "cancelled there)."
        return actions.cancel(current, request)

    cancel.click(_guard(do_cancel), run_id, progress, api_visibility="undocumented")
    refresh.click(actions.refresh_models, None, models, api_visibility="undocumented")
    example.click(lambda: (None, str(EXAMPLE_SET)), None, [upload, path], api_visibility="private", queue=False)
    for shown in (gr.context.Context.root_block.load, tab.select):  # adapters made since start-up are listed
        shown(actions.refresh_models, outputs=models, api_visibility="undocumented", queue=False)
    _register_api(actions)
    return actions


def _register_api(actions: EvalActions) -> None:
    def eval_start(data: str, models: list[str] | None = None, method: str = "loglik", limit: int = 0,
                   image_detail: str = "", num_beams: int = 1, max_new_tokens: int = 0,
                   request: gr.Request = None) -> dict:
        """Start an evaluation of models ('base' and adapter names) on an eval set ('upload:<id>' from
        eval_upload, or a path when local) by method ('loglik', 'generate', or 'loglik,generate' to compare
        them), its pictures at image_detail (low / auto / high; '' = as Chat); num_beams and max_new_tokens
        (0 = 16 for questions, 64 for captions) are generate's. Returns run_id, the detected format, questions
        and skipped rows."""
        return actions.start(data, models, method, limit or None, image_detail=image_detail, num_beams=num_beams,
                             max_new_tokens=max_new_tokens or None, request=request)

    def eval_status(run_id: str = "", request: gr.Request = None) -> dict:
        """State and progress of a run ('' = the newest); when finished: table, verdicts, subjects, csv, chart."""
        return actions.status(run_id, request)

    def eval_cancel(run_id: str = "", request: gr.Request = None) -> str:
        """Stop a run after its current batch, keeping what is scored."""
        return actions.cancel(run_id, request)

    for fn in (eval_start, eval_status, eval_cancel):
        gr.api(_guard(fn), api_name=fn.__name__, api_description=fn.__doc__)

    def eval_files(run_id: str = "", request: gr.Request = None):
        """A finished run's files, downloaded by the client: eval_status names them by their place on the server,
        which a client elsewhere cannot fetch (a shared app's answered 403; blind tester)."""
        status = actions.status(run_id, request)
        if status["state"] == "running":
            raise gr.Error(f"Evaluation {status['run_id']} is still running; ask for its files when eval_status says "
                           "it has ended (a cancelled run has the files of what it scored).")
        if "csv" not in status:
            raise gr.Error(f"Evaluation {status['run_id']} {status['state']} without files: {status['message']}")
        return [status[key] if Path(status[key]).is_file() else None for key in ("csv", "chart", "summary")]

    with gr.Row(visible=False):
        api_run = gr.Textbox(value="", label="run_id")
        files = [gr.File(label=label) for label in ("results_csv", "chart_png", "summary_json")]
        api_button = gr.Button("eval_files")
    api_button.click(_guard(eval_files), api_run, files, api_name="eval_files",
                     api_description="The files of a finished run ('' = the newest): results.csv, chart.png and "
                                     "summary.json, downloaded to the client.")
    upload_endpoint(actions.settings, "eval_upload",
                    "Upload an eval set (.jsonl/.json/.csv/.parquet or a .zip with its images); "
                    "returns 'upload:<id>' for eval_start.", kind="eval set")
