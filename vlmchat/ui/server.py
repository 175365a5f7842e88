"""Serving the web UI: load the model, build the Gradio app, bind where settings say."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time

from .access import resolve_access
from ..api.serve import api_routes
from .gate import gate_middleware
from ..errors import InputError
from ..files import confine_pictures, mark_running_ui
from ..lora.runtime import is_base
from ..lora.store import find_adapter
from ..models.manager import ModelManager, is_endpoint
from ..settings import Settings

def _start_adapter(manager: ModelManager, settings: Settings) -> None:
    name = settings.model.adapter
    if not name:
        return
    manager.attach_named_adapter(name)
    manager.activate_adapter(name)
    print(f"vlmchat: adapter '{name}' active", flush=True)


def _other_machines(host: str, port: int) -> str:
    """' (other machines: http://<this machine's address>:<port>/)' when the app binds every interface."""
    if host != "0.0.0.0":
        return ""
    import socket

    try:  # the address a route out of this machine leaves from (no packet is sent)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("192.0.2.1", 9))
            address = probe.getsockname()[0]
    except OSError:
        return " (other machines: this machine's address, port " + str(port) + ")"
    return f" (other machines: http://{address}:{port}/)"


def check_port(host: str, port: int) -> None:
    """InputError unless `port` can be served on `host` now (another vlmchat, or another program, may hold it)."""
    import socket

    if ":" in host:  # Gradio writes the host into its own URL unbracketed: 'Invalid port: ::7860', after the model
        raise InputError(f"--host {host} is an IPv6 address, and the web server vlmchat runs on cannot serve on one; "
                         "use 0.0.0.0 (every IPv4 interface) or this computer's host name.")
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except socket.gaierror as exc:  # a typo such as 0.0.0.0. got the advice to change the port
        raise InputError(f"--host {host} is not an address or a name this computer knows ({exc.strerror}); use "
                         "127.0.0.1 (this computer only) or 0.0.0.0 (other machines too).") from None
    def free(number: int) -> OSError | None:
        try:
            with socket.socket(family, socket.SOCK_STREAM) as probe:
                # As uvicorn binds: a socket still closing is no obstacle.
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind((host, number))
        except OSError as exc:
            return exc
        return None

    taken = free(port)
    if taken:  # the port suggested is one found free now, not port + 1 taken by a second copy too
        spare = next((number for number in range(port + 1, min(port + 50, 65536)) if not free(number)), None)
        advice = f"start with another port: --port {spare}" if spare else "start with another port (--port N)"
        raise InputError(f"Cannot serve on {host}:{port} ({taken.strerror or taken}): another program, or vlmchat "
                         f"already running, uses it. Open that one, stop it, or {advice}.")


def serve(settings: Settings, auth_file: str | None = None, block: bool = True):
    """Load the configured model and serve the UI; returns the exit code (or the app if not blocking)."""
    if block:  # from the start: a SIGTERM as the server began to answer killed the app unsaid (CI caught it)
        from ..cli import stop_as_ctrl_c

        stop_as_ctrl_c()  # a fine-tune going on is said then too (SIGTERM ended the app in silence)
    access = resolve_access(settings, auth_file)
    if settings.server.exposed:  # pictures named inside uploaded datasets stay inside the upload
        confine_pictures()
    check_port(settings.server.host, settings.server.port)  # before the model loads, not a traceback after it
    if settings.model.adapter and not (is_base(settings.model.adapter) or is_endpoint(settings.model.adapter)):  # a mistyped --adapter, before the load
        find_adapter(settings.paths.resolve("adapters"), settings.model.adapter)
    manager = ModelManager(settings)
    print("vlmchat: loading", settings.model.id, "...", flush=True)
    info = manager.load()
    print("vlmchat:", info.summary(), flush=True)
    _start_adapter(manager, settings)
    # A local tool does not phone home.
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    # The login throttle counts the connecting address. uvicorn takes it from X-Forwarded-For when the connection
    # comes from 127.0.0.1, so anyone arriving through a local tunnel or proxy could name any address: trust no
    # proxy unless the operator names theirs (uvicorn reads FORWARDED_ALLOW_IPS).
    os.environ.setdefault("FORWARDED_ALLOW_IPS", "")
    from .app import build_app

    notices: list[str] = []  # problems worth a banner in the page, read when a page loads
    app = build_app(manager, settings, notices)
    server = settings.server
    app.queue(default_concurrency_limit=server.concurrency_limit, max_size=server.max_queue)
    if access.generated:
        user, password = access.logins[0]
        # Shown once, on the terminal only: never logged, never written to a file.
        print(f"vlmchat: the app is reachable from other machines, so it needs a login. "
              f"User: {user}  Password: {password}  (pass --auth USER:PASS to choose your own)", flush=True)
    try:
        app.launch(
            server_name=server.host, server_port=server.port, share=server.share,
            auth=list(access.logins) or None, auth_message="vlmchat: log in with the user and password you were given.",
            # Gradio's one cap is for any file: a dataset, eval set or adapter zip may be as large as a batch of
            # uploads; each picture is held to server.max_upload_mb where it is read (Chat, Caption, Compare, /v1).
            max_file_size=f"{max(server.max_upload_mb, server.max_batch_upload_mb)}mb", prevent_thread_lock=True,
            show_error=True, quiet=True,
            # A picture in a chat message gets Gradio's Share button whatever the Chatbot's `buttons` say; it only
            # answers "Must be on Spaces to share" here (caption reviewer).
            # The saved chats scroll in a list of their own height: twenty of them pushed Rename, Delete and the
            # note that answers them below the window (UI tester).
            css="#vlmchat-chatbot button[aria-label='Share'] { display: none; }"
                " #vlmchat-chat-list .wrap { max-height: 40vh; overflow-y: auto; }"
                " #vlmchat-chat-list label { overflow-wrap: anywhere; }",  # a title without spaces ran off its card
            allowed_paths=[str(settings.paths.resolve("outputs"))],
            app_kwargs={"middleware": [gate_middleware(settings)],  # every route behind the login; logins throttled
                        "routes": api_routes(manager, settings, bool(access.logins))},  # OpenAI's API under /v1
        )
        # Gradio's close waits up to 5 s for open connections to end, and a gradio_client's (or a page's) event
        # stream does not: every stop after one took 5 s. A response being sent gets 1 s to finish; the streams
        # still open then are cancelled without uvicorn's traceback of each.
        app.server.config.timeout_graceful_shutdown = 1
        logging.getLogger("uvicorn.error").addFilter(_quiet_cancel)
        print(f"vlmchat: serving on {app.local_url}{_other_machines(server.host, server.port)}", flush=True)
        mark_running_ui(settings.paths.resolve("outputs"), server.port)
        if server.share and not app.share_url:
            notices.append("The public share link could not be created (offline, or the tunnel program is "
                           "missing); the app keeps serving locally.")
            print(f"vlmchat: {notices[-1]}", flush=True)
        elif app.share_url:
            print(f"vlmchat: public link: {app.share_url}", flush=True)
        if not block:
            return app
        app.block_thread()  # Gradio's own loop ends at a KeyboardInterrupt, and closes the server
    except KeyboardInterrupt:
        if not block:
            raise
        app.close()  # stopped before block_thread, which closes the server itself (again: harmless)
    say_running_jobs(settings)
    drop_requests_in_flight(manager)
    return 0


def _quiet_cancel(record: logging.LogRecord) -> bool:
    """False for uvicorn's lines about the connections a stop cancels (the streams still open after its 1 s)."""
    cancelled = record.exc_info is not None and isinstance(record.exc_info[1], asyncio.CancelledError)
    return not cancelled and "timeout graceful shutdown exceeded" not in record.getMessage()


def drop_requests_in_flight(manager: ModelManager, grace_s: float = 1.0) -> None:
    """At quit, the server closed: a request still waiting on an endpoint (a slow or silent server, up to twice its
    timeout_s) runs on a pool thread, which Python joins before the process ends, so the app stopped by Ctrl-C or
    SIGTERM went on for minutes (found while trimming the tests: a SIGTERM waited out a silent server's 20 s). After
    `grace_s` such requests are dropped: the process ends at once, its exit handlers run."""
    import atexit

    deadline = time.monotonic() + grace_s
    busy = manager.close_endpoints()
    for thread in busy:
        thread.join(max(0.0, deadline - time.monotonic()))
    lingering = [thread for thread in busy if thread.is_alive()]
    if not lingering:
        return
    print(f"vlmchat: stopped; {len(lingering)} request(s) still waiting on an endpoint are dropped.", flush=True)
    atexit._run_exitfuncs()
    sys.stdout.flush(), sys.stderr.flush()
    os._exit(0)


def say_running_jobs(settings: Settings) -> None:
    """At quit: a fine-tune started from the app goes on without it (its own process), which was said nowhere."""
    from ..finetune.runner import jobs_folder, running_jobs_under

    for job, pid in running_jobs_under(jobs_folder(settings)):
        print(f"vlmchat: the fine-tune job {job.name} goes on without the app and writes its adapter when done; "
              f"start the app again to follow it in the Fine-tune tab, or stop it now: kill {pid}", flush=True)
