"""A small Hugging Face hub on 127.0.0.1 that speaks what huggingface_hub 2.4 asks for.

Endpoints (as huggingface_hub's HfApi / hf_hub_download / snapshot_download call them):
  GET  /api/models/{id}[/revision/{rev}]     model info: sha, gated, siblings
  GET  /api/models/{id}/tree/{rev}           file listing (path, size, oid)
  GET  /api/models/{id}/auth-check           401 / 403 with X-Error-Code: GatedRepo for gated repos
  GET  /api/whoami-v2                        the token's user (used by huggingface_hub.login)
  HEAD /{id}/resolve/{rev}/{file}            ETag, X-Repo-Commit, Content-Length
  GET  /{id}/resolve/{rev}/{file}            the bytes; honours Range (206 + Content-Range)
Tokens: GRANTED sees every repo; NOT_GRANTED is a valid user who has not accepted gated licences;
any other token is rejected with 401 "Invalid credentials in Authorization header", as the hub does.
`drop_after[path] = n` sends n bytes of that file on its next full GET and then cuts the connection.
`rate = n` sends files' bytes at n bytes a second (a slow line); `sent[path]` counts the bytes of a file sent.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

GRANTED = "hf_test_granted_0123456789"
NOT_GRANTED = "hf_test_nolicence_0123456789"
USERS = {GRANTED: "alice", NOT_GRANTED: "bob"}


@dataclass
class FakeRepo:
    """One model repo: files by path, a commit sha, and who may download it."""

    files: dict[str, bytes]
    gated: bool = False
    sha: str = ""

    def __post_init__(self) -> None:
        if not self.sha:
            digest = hashlib.sha1()
            for name in sorted(self.files):
                digest.update(name.encode() + hashlib.sha1(self.files[name]).digest())
            self.sha = digest.hexdigest()


@dataclass
class Request:
    method: str
    path: str
    range: str | None
    authorized: bool


@dataclass
class HubState:
    repos: dict[str, FakeRepo] = field(default_factory=dict)
    drop_after: dict[str, int] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    rate: int | None = None
    sent: dict[str, int] = field(default_factory=dict)


def repo_from_folder(folder: Path, gated: bool = False, extra: dict[str, bytes] | None = None) -> FakeRepo:
    """A repo holding every file of `folder` (top level) plus `extra` files."""
    files = {path.name: path.read_bytes() for path in sorted(folder.iterdir()) if path.is_file()}
    files.update(extra or {})
    return FakeRepo(files, gated=gated)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: HubState

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    # -- helpers -------------------------------------------------------------------------------
    def _token(self) -> str | None:
        value = self.headers.get("authorization") or ""
        return value[7:].strip() if value.lower().startswith("bearer ") else None

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None, head: bool = False) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, str(value))
        if "Content-Length" not in (headers or {}):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and not head:
            self.wfile.write(body)

    def _json(self, data, status: int = 200) -> None:
        self._send(status, json.dumps(data).encode(), {"Content-Type": "application/json"})

    def _error(self, status: int, code: str | None = None, message: str | None = None, head: bool = False) -> None:
        headers = {"Content-Type": "application/json"}
        if code:
            headers["X-Error-Code"] = code
        if message:
            headers["X-Error-Message"] = message
        self._send(status, json.dumps({"error": message or code or "error"}).encode(), headers, head=head)

    def _auth_problem(self, repo: FakeRepo, head: bool = False) -> bool:
        """Answer 401/403 like the hub and return True when the request may not read `repo`'s files."""
        token = self._token()
        if token is not None and token not in USERS:
            self._error(401, message="Invalid credentials in Authorization header", head=head)
            return True
        if repo.gated and token is None:
            self._error(401, "GatedRepo", "Access to model is restricted. You must have access to it and be "
                                          "authenticated to access it. Please log in.", head=head)
            return True
        if repo.gated and token != GRANTED:
            self._error(403, "GatedRepo", "Access to model is restricted and you are not in the authorized list.",
                        head=head)
            return True
        return False

    # -- routes --------------------------------------------------------------------------------
    def do_HEAD(self) -> None:
        self._route(head=True)

    def do_GET(self) -> None:
        self._route(head=False)

    def _route(self, head: bool) -> None:
        path = self.path.split("?", 1)[0]
        self.state.requests.append(Request(self.command, path, self.headers.get("Range"), self._token() is not None))
        if path == "/api/whoami-v2":
            return self._whoami()
        match = re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/(revision|tree)/([^/]+))?(/auth-check)?", path)
        if match:
            return self._api(match.group(1), match.group(2), match.group(3), bool(match.group(4)))
        match = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
        if match:
            return self._resolve(match.group(1), match.group(2), match.group(3), head)
        self._error(404, message="Not found", head=head)

    def _whoami(self) -> None:
        token = self._token()
        if token not in USERS:
            return self._error(401, message="Invalid credentials in Authorization header")
        self._json({"type": "user", "name": USERS[token],
                    "auth": {"type": "access_token", "accessToken": {"displayName": "vlmchat-test", "role": "read"}}})

    def _repo(self, repo_id: str, revision: str | None, head: bool = False) -> FakeRepo | None:
        repo = self.state.repos.get(repo_id)
        if repo is None:
            self._error(404 if self._token() else 401, "RepoNotFound", "Repository not found", head=head)
            return None
        if revision not in (None, "main", repo.sha):
            self._error(404, "RevisionNotFound", "Invalid rev id", head=head)
            return None
        return repo

    def _api(self, repo_id: str, kind: str | None, revision: str | None, auth_check: bool) -> None:
        repo = self._repo(repo_id, revision)
        if repo is None:
            return
        token = self._token()
        if token is not None and token not in USERS:
            return self._error(401, message="Invalid credentials in Authorization header")
        if auth_check:
            if not self._auth_problem(repo):
                self._json({"ok": True})
            return
        if kind == "tree":
            return self._json([{"type": "file", "path": name, "size": len(data),
                                "oid": hashlib.sha1(data).hexdigest()} for name, data in repo.files.items()])
        self._json({"id": repo_id, "modelId": repo_id, "sha": repo.sha, "private": False,
                    "gated": "manual" if repo.gated else False, "disabled": False,
                    "siblings": [{"rfilename": name} for name in repo.files]})

    def _resolve(self, repo_id: str, revision: str, name: str, head: bool) -> None:
        repo = self._repo(repo_id, revision, head)
        if repo is None or self._auth_problem(repo, head):
            return
        data = repo.files.get(name)
        if data is None:
            return self._error(404, "EntryNotFound", "Entry not found", head=head)
        headers = {"ETag": f'"{hashlib.sha256(data).hexdigest()}"', "X-Repo-Commit": repo.sha,
                   "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
        wanted = self.headers.get("Range")
        start, end = 0, len(data) - 1
        if wanted and not head:
            match = re.fullmatch(r"bytes=(\d+)-(\d*)", wanted.strip())
            if not match or int(match.group(1)) >= len(data):
                return self._error(416, message="Range not satisfiable")
            start = int(match.group(1))
            end = min(int(match.group(2)), len(data) - 1) if match.group(2) else len(data) - 1
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        body = data[start:end + 1]
        headers["Content-Length"] = len(body)
        cut = self.state.drop_after.pop(name, None) if not head and start == 0 else None
        if cut is None and (head or not self.state.rate):
            return self._send(206 if wanted and not head else 200, body, headers, head=head)
        if cut is None:
            return self._send_slowly(206 if wanted else 200, name, body, headers)
        # Promise the whole file, send part of it, then hang up: a connection dropped mid-file.
        self.send_response(200)
        for key, value in headers.items():
            self.send_header(key, str(value))
        self.end_headers()
        self.wfile.write(body[:cut])
        self.wfile.flush()
        self.close_connection = True
        self.connection.shutdown(2)


    def _send_slowly(self, status: int, name: str, body: bytes, headers: dict) -> None:
        """Send `body` at `state.rate` bytes a second, in pieces of a tenth of a second; a client that hangs up
        mid-file (a stopped download) ends it quietly."""
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, str(value))
        self.end_headers()
        piece = max(1, self.state.rate // 10)
        try:
            for start in range(0, len(body), piece):
                self.wfile.write(body[start:start + piece])
                self.wfile.flush()
                self.state.sent[name] = self.state.sent.get(name, 0) + len(body[start:start + piece])
                time.sleep(0.1)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


class HubServer:
    """The fake hub, serving in a background thread on 127.0.0.1."""

    def __init__(self) -> None:
        self.state = HubState()
        handler = type("Handler", (_Handler,), {"state": self.state})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="fake-hub", daemon=True)

    def add(self, repo_id: str, repo: FakeRepo) -> FakeRepo:
        self.state.repos[repo_id] = repo
        return repo

    def downloads(self, name: str) -> list[Request]:
        """GET requests for file `name` (resolve URLs), in order."""
        return [r for r in self.state.requests
                if r.method == "GET" and "/resolve/" in r.path and r.path.endswith("/" + name)]

    def __enter__(self) -> "HubServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A running fake hub, with HF_ENDPOINT pointing at it and the HF cache, token file and home in tmp_path.

    Both the environment (for child processes) and huggingface_hub.constants (read at import, for this
    process) are pointed at it; no real token, cache or network is touched.
    """
    from huggingface_hub import constants

    home = tmp_path / "hf-home"
    with HubServer() as server:
        env = {"HF_ENDPOINT": server.url, "HF_HOME": str(home), "HF_HUB_CACHE": str(home / "hub"),
               "HF_HUB_DISABLE_XET": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        for key in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN_PATH"):
            monkeypatch.delenv(key, raising=False)
        patched = {"ENDPOINT": server.url, "HUGGINGFACE_CO_URL_TEMPLATE": server.url + "/{repo_id}/resolve/{revision}/{filename}",
                   "HF_HOME": str(home), "HF_HUB_CACHE": str(home / "hub"),
                   "HF_TOKEN_PATH": str(home / "token"), "HF_STORED_TOKENS_PATH": str(home / "stored_tokens"),
                   "HF_HUB_OFFLINE": False, "HF_HUB_DISABLE_XET": True}
        for key, value in patched.items():
            monkeypatch.setattr(constants, key, value)
        yield server
