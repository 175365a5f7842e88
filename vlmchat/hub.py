"""Downloading models from the Hugging Face hub: access check, only the files needed, clear errors.

`inspect_repo` checks access (gated repos: 401 = no token, 403 = token without access) and lists
what `download_model` will fetch: safetensors weights, configs, tokenizer/processor files and the
chat template; no .bin when safetensors exist, nothing in sub-folders (original/, onnx/, gguf/).
Downloads go to huggingface_hub's own cache, so they are shared with transformers and resumable:
a dropped connection resumes with an HTTP range request, and a run that stops keeps every
finished file. Offline (HF_HUB_OFFLINE=1 or no connection) the cache is used when complete.

The token comes from the `token` argument (the Model tab's password field), else HF_TOKEN, else
the file `hf auth login` writes. It is never printed, logged or written anywhere, except by
`remember_token`, which hands it to huggingface_hub's own login storage when the user asks.
`python launch.py download ID` runs this from the terminal.
"""

from __future__ import annotations

import fnmatch
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .errors import ModelLoadError, first_line, named

Progress = Callable[[float, str], None]

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx", ".gguf", ".pkl")
# Everything from_pretrained needs besides weights: configs, tokenizer, processor, chat template.
_SUPPORT_PATTERNS = ("*.json", "*.jinja", "tokenizer.model", "*.tiktoken", "merges.txt", "vocab.txt",
                     "spiece.model", "sentencepiece*.model")
TOKENIZER_FILES = ("tokenizer*", "vocab*", "*.model", "*.tiktoken")
_NOT_NEEDED = ("README*", ".gitattributes", "*.md", "LICENSE*", "USE_POLICY*", "*.png", "*.jpg")


class DownloadError(ModelLoadError):
    """A model could not be downloaded; the message says why and what to do."""


class GatedModelError(DownloadError):
    """The model is gated and the token is missing (401) or has no access yet (403)."""


class OfflineError(DownloadError):
    """The hub cannot be reached (offline mode or no connection) and the model is not fully cached."""


@dataclass(frozen=True)
class RepoFile:
    """One file of a hub repo, and whether the cache already holds it."""

    path: str
    size: int
    cached: bool = False


@dataclass(frozen=True)
class DownloadPlan:
    """What `download_model` will fetch for one repo, checked for access."""

    repo_id: str
    revision: str
    commit: str
    files: tuple[RepoFile, ...]
    skipped: tuple[str, ...]
    gated: bool
    token_source: str

    @property
    def total_bytes(self) -> int:
        return sum(file.size for file in self.files)

    @property
    def missing_bytes(self) -> int:
        """Bytes still to download (files not in the cache)."""
        return sum(file.size for file in self.files if not file.cached)

    def describe(self) -> str:
        """Several lines: the files, their sizes, the total, and what is left out."""
        lines = [f"{self.repo_id} @ {self.commit[:10]}: {len(self.files)} files, {human_size(self.total_bytes)}"
                 f" ({human_size(self.missing_bytes)} to download)"]
        lines += [f"  {file.path}  {human_size(file.size)}{'  (cached)' if file.cached else ''}"
                  for file in self.files]
        if self.skipped:
            shown = ", ".join(self.skipped[:6]) + (f", ... ({len(self.skipped) - 6} more)" if len(self.skipped) > 6 else "")
            lines.append(f"  left out (not needed): {shown}")
        if self.gated:
            lines.append(f"  gated model: access granted to the token from {self.token_source}")
        return "\n".join(lines)


@dataclass(frozen=True)
class Downloaded:
    """Where a downloaded (or cached) model is, and how it got there."""

    repo_id: str
    path: Path
    from_cache: bool
    message: str


def human_size(size: float) -> str:
    """1536 -> '1.5 KB' (decimal units, as the hub shows them)."""
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"


def hub_endpoint() -> str:
    """The hub to talk to: HF_ENDPOINT (read now, so a changed environment counts), else huggingface.co."""
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def is_offline() -> bool:
    """True when HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) asks for no network access."""
    from huggingface_hub import constants

    flags = (os.environ.get("HF_HUB_OFFLINE"), os.environ.get("TRANSFORMERS_OFFLINE"))
    if any(flag is not None for flag in flags):
        return any((flag or "").strip().lower() in ("1", "true", "yes", "on") for flag in flags)
    return bool(constants.HF_HUB_OFFLINE)


def resolve_token(explicit: str | None = None) -> tuple[str | None, str]:
    """(token or None, where it came from) — the token itself is never shown."""
    if explicit and explicit.strip():
        return explicit.strip(), "the token field"
    from huggingface_hub import get_token

    token = get_token()
    if token is None:
        return None, "nowhere (no token)"
    if os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN"):
        return token, "HF_TOKEN"
    return token, "your saved login (hf auth login)"


def select_files(files: list[tuple[str, int]]) -> tuple[list[tuple[str, int]], list[str]]:
    """(files to fetch, files left out): top-level weights + support files; safetensors over .bin."""
    keep, skip = [], []
    top = [(path, size) for path, size in files if "/" not in path]
    skip += [path for path, _ in files if "/" in path]  # original/, onnx/, gguf/ ...: other formats
    safetensors = [path for path, _ in top if path.endswith(".safetensors")]
    # Some repos also ship a single consolidated copy of sharded weights: take the transformers layout only.
    transformers_layout = [path for path in safetensors if path.startswith("model")]
    wanted_weights = set(transformers_layout or safetensors)
    for path, size in top:
        name = path.lower()
        if name.endswith(_WEIGHT_SUFFIXES):
            if path in wanted_weights or (not safetensors and name.endswith(".bin")):
                keep.append((path, size))
            else:
                skip.append(path)
        elif name.endswith(".bin.index.json") and safetensors:
            skip.append(path)
        elif any(fnmatch.fnmatch(path, pattern) for pattern in _SUPPORT_PATTERNS) and not any(
                fnmatch.fnmatch(path, pattern) for pattern in _NOT_NEEDED):
            keep.append((path, size))
        else:
            skip.append(path)
    return keep, skip


def _cache_dir() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _snapshot_folder(repo_id: str, commit: str) -> Path:
    from huggingface_hub.file_download import repo_folder_name

    return _cache_dir() / repo_folder_name(repo_id=repo_id, repo_type="model") / "snapshots" / commit


def _scrub(text: str, token: str | None) -> str:
    return text.replace(token, "<token>") if token else text


def friendly_hub_error(exc: BaseException, repo_id: str, token: str | None = None,
                       revision: str | None = None) -> DownloadError:
    """A one-line, user-facing error for any failure talking to the hub (the token never appears)."""
    import httpx2
    from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError,
                                        OfflineModeIsEnabled, RepositoryNotFoundError, RevisionNotFoundError)

    endpoint = hub_endpoint()
    page = f"{endpoint}/{repo_id}"
    supply = ("set HF_TOKEN, run `hf auth login`, or paste the token in the Model tab "
              f"(create one at {endpoint}/settings/tokens)")
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if isinstance(exc, GatedRepoError):
        if status == 403:
            return GatedModelError(
                f"Your Hugging Face token has no access to the gated model {repo_id} yet (HTTP 403). Accept the "
                f"licence at {page} with the account the token belongs to (approval can take a while); a "
                "fine-grained token also needs 'read access to public gated repos'.")
        return GatedModelError(
            f"{repo_id} is gated and no Hugging Face token was sent (HTTP {status or 401}). Accept its licence "
            f"at {page}, then give vlmchat a token with read access: {supply}.")
    if isinstance(exc, RevisionNotFoundError):
        return DownloadError(f"{repo_id} has no revision '{revision or 'main'}'; see the branches and tags at "
                             f"{page}/tree/main or leave --revision out.")
    if isinstance(exc, RepositoryNotFoundError):
        return DownloadError(f"There is no model '{repo_id}' at {endpoint} (HTTP {status or 404}): check the "
                             "spelling (owner/name); if it is private, use a token of an account that can see it.")
    if isinstance(exc, HfHubHTTPError) and status == 401:
        return DownloadError(f"The hub rejected the Hugging Face token (HTTP 401: invalid, expired or revoked). "
                             f"Use a valid one: {supply}.")
    if isinstance(exc, HfHubHTTPError) and status == 403:
        return DownloadError(f"The hub refused access to {repo_id} (HTTP 403); check the token's permissions "
                             f"and the model page {page}.")
    if isinstance(exc, (OfflineModeIsEnabled, LocalEntryNotFoundError, httpx2.ConnectError,
                        httpx2.TimeoutException)):
        return OfflineError(offline_message(repo_id))
    if isinstance(exc, (httpx2.HTTPError, HfHubHTTPError)):
        return DownloadError(f"Downloading {repo_id} failed: {_scrub(first_line(exc), token)}. Run the same "
                             "command again: finished files are kept and the rest resumes.")
    if isinstance(exc, OSError):
        return DownloadError(f"Downloading {repo_id} failed: {_scrub(first_line(exc), token)}. "
                             + _disk_advice(exc.errno))
    return DownloadError(f"Downloading {repo_id} failed: {_scrub(named(exc), token)}")


def _disk_advice(number: int | None) -> str:
    """What to do after a failure to write the cache, by its errno."""
    import errno

    if number in (errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR):
        return (f"The folder {_cache_dir()} cannot be written: choose another one with HF_HUB_CACHE (or HF_HOME), "
                "e.g. HF_HUB_CACHE=~/hf-cache, and run it again.")
    if number in (errno.ENOSPC, errno.EDQUOT):
        return (f"Free some disk space in {_cache_dir()} (or choose a folder on a larger disk with HF_HUB_CACHE) and "
                "run it again: finished files are kept.")
    return "Run it again: finished files are kept."


def offline_message(repo_id: str) -> str:
    """'not cached and offline (or the hub cannot be reached)', and what to do."""
    why = ("offline mode is on (HF_HUB_OFFLINE=1)" if is_offline()
           else f"the hub ({hub_endpoint()}) cannot be reached")
    # said alike by `download`, `plan`, `--model` and the Model tab: "run `launch.py download X`" told the download
    # command to run itself, and "--model PATH" meant nothing in a browser
    again = "unset HF_HUB_OFFLINE and try again" if is_offline() else (
        "connect to the internet (or check the proxy, or HF_ENDPOINT) and try again")
    return f"{repo_id} is not cached and {why}: {again}, or use a copy of the model in a folder on this computer."


def cached_snapshot(repo_id: str, revision: str | None = None) -> Path | None:
    """The cached folder of `repo_id` when it holds every needed file, else None (no network)."""
    from huggingface_hub import get_cached_repo_tree, snapshot_download
    from huggingface_hub.errors import CachedRepoTreeNotFoundError, LocalEntryNotFoundError

    if repo_id.count("/") != 1:
        return None
    try:
        tree = get_cached_repo_tree(repo_id, revision=revision)
        needed, _ = select_files([(file.path, file.size or 0) for file in tree])
        path = Path(snapshot_download(repo_id, revision=revision, local_files_only=True,
                                      allow_patterns=[name for name, _ in needed]))
    except CachedRepoTreeNotFoundError:
        # No file listing: downloaded by another tool, or only config.json was fetched (the plan reads it to size
        # a hub model). Trust the folder only when it holds what loading reads.
        try:
            path = Path(snapshot_download(repo_id, revision=revision, local_files_only=True))
        except (LocalEntryNotFoundError, ValueError, OSError):
            return None
    except (LocalEntryNotFoundError, ValueError, OSError):
        return None
    return path if holds_a_model(path) else None


def holds_a_model(folder: Path) -> bool:
    """True when `folder` has what from_pretrained reads: config.json, a tokenizer, and every weights file.

    Every shard an index names must be there; without an index, one top-level safetensors or PyTorch file.
    """
    import json

    if not (folder / "config.json").is_file():
        return False
    if not any(file.is_file() for pattern in TOKENIZER_FILES for file in folder.glob(pattern)):
        return False
    for index in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if (folder / index).is_file():
            try:
                shards = set(json.loads((folder / index).read_text(encoding="utf-8"))["weight_map"].values())
            except (OSError, ValueError, KeyError, AttributeError):
                return False
            return bool(shards) and all((folder / shard).is_file() for shard in shards)
    return any(file.is_file() for file in folder.glob("*.safetensors")) or (folder / "pytorch_model.bin").is_file()


def check_hub_id(repo_id: str) -> str:
    """`repo_id` when it can name a hub repository, else DownloadError saying what one looks like ('~/x' reached
    the hub library, whose HFValidationError was shown as it was)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    repo_id = _id_of_page(repo_id.strip())
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        pass
    else:
        if repo_id.count("/") == 1:
            return repo_id
    raise DownloadError(f"'{repo_id}' is not a hub id; hub ids look like 'owner/name'.")


def _id_of_page(text: str) -> str:
    """'owner/name' from a model page's address on the hub (huggingface.co or HF_ENDPOINT's; also with /tree/main or
    /blob/main/FILE after it), else `text` as it is."""
    from urllib.parse import urlsplit

    endpoint = hub_endpoint()
    address = urlsplit(text)
    if text.startswith(endpoint + "/"):
        path = text[len(endpoint):]
    elif address.scheme in ("http", "https") and address.hostname in ("huggingface.co", "hf.co"):
        path = address.path
    else:
        return text
    parts = path.strip("/").split("/")
    if len(parts) >= 2 and parts[0] not in ("datasets", "spaces") and (len(parts) == 2 or parts[2] in ("tree", "blob")):
        return "/".join(parts[:2])
    return text


def inspect_repo(repo_id: str, revision: str | None = None, token: str | None = None) -> DownloadPlan:
    """Check access to `repo_id` and list the files a download would fetch (no weights transferred)."""
    from huggingface_hub import HfApi
    from huggingface_hub.hf_api import RepoFile as HubFile

    repo_id = check_hub_id(repo_id)
    if is_offline():
        raise OfflineError(f"Offline mode is on (HF_HUB_OFFLINE=1), so {repo_id} cannot be checked on the hub; "
                           "unset HF_HUB_OFFLINE to see what a download would fetch.")
    token, source = resolve_token(token)
    api = HfApi(endpoint=hub_endpoint())
    try:
        info = api.model_info(repo_id, revision=revision, token=token or False)
        gated = bool(info.gated)
        if gated:  # listing a gated repo is public; downloading is not: check before transferring anything
            api.auth_check(repo_id, token=token or False)
        tree = [(item.path, int(item.size or 0)) for item in
                api.list_repo_tree(repo_id, revision=info.sha, recursive=True, token=token or False)
                if isinstance(item, HubFile)]
    except Exception as exc:  # every hub failure becomes one user-facing message
        raise friendly_hub_error(exc, repo_id, token, revision) from None
    needed, skipped = select_files(tree)
    if not any(path.endswith((".safetensors", ".bin")) for path, _ in needed):
        raise DownloadError(f"{repo_id} has no safetensors or PyTorch weights at its top level; vlmchat loads "
                            "models saved by transformers (see the files at "
                            f"{hub_endpoint()}/{repo_id}/tree/main).")
    snapshot = _snapshot_folder(repo_id, info.sha)
    files = tuple(RepoFile(path, size, (snapshot / path).exists()) for path, size in needed)
    return DownloadPlan(repo_id, revision or "main", info.sha, files, tuple(skipped), gated, source)


def _reporter(progress: Progress, plan: DownloadPlan):
    """A tqdm-like class for snapshot_download that reports bytes written as progress(fraction, text)."""
    total = max(plan.missing_bytes, 1)

    class Reporter:
        done = 0

        def __init__(self, *args, **kwargs):
            self.unit = kwargs.get("unit")
            self.desc = str(kwargs.get("desc") or "")
            self.n, self.total = kwargs.get("initial", 0) or 0, kwargs.get("total")

        def update(self, n=1):
            self.n += n or 0
            if self.unit == "B" and not self.desc.startswith("Downloading bytes"):
                Reporter.done += n or 0
                progress(min(Reporter.done / total, 1.0),
                         f"Downloading {plan.repo_id}: {human_size(Reporter.done)} of {human_size(total)}")

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def close(self):
            pass

        def refresh(self, *args, **kwargs):
            pass

        def set_description(self, desc=None, refresh=True):
            self.desc = str(desc or "")

        set_description_str = set_description

        def set_postfix_str(self, *args, **kwargs):
            pass

    return Reporter


def download_model(repo_id: str, revision: str | None = None, token: str | None = None,
                   progress: Progress | None = None, remember: bool = False,
                   on_plan: Callable[[DownloadPlan], None] | None = None) -> Downloaded:
    """Fetch the files `repo_id` needs into the hub cache (or use the cache when offline); returns the folder.

    progress(fraction, text) is called as bytes arrive; without it, tqdm bars go to the terminal.
    on_plan(plan) is called once access is confirmed, before anything is fetched (the CLI prints the file list).
    remember=True saves the token with huggingface_hub's login (only after access was confirmed).
    Ctrl-C stops the download within a chunk and raises KeyboardInterrupt; finished files are kept.
    """
    from huggingface_hub import snapshot_download

    repo_id = check_hub_id(repo_id)
    if is_offline():
        return cached_instead(repo_id, revision, OfflineError(offline_message(repo_id)))
    try:
        plan = inspect_repo(repo_id, revision, token)
    except OfflineError as exc:  # no connection: a fully cached model is used, as offline
        return cached_instead(repo_id, revision, exc)
    _quiet_hub()
    _check_room(plan)
    _check_model(plan, token)
    if on_plan:
        on_plan(plan)
    token, _ = resolve_token(token)
    if remember and token:
        remember_token(token)
    if progress:
        progress(0.0, f"Downloading {repo_id}: {len(plan.files)} files, {human_size(plan.missing_bytes)}")
    _small_chunks()
    stop = threading.Event()
    bars = _reporter(progress, plan) if progress else _hub_tqdm()
    try:
        path = _stoppable_run(lambda: snapshot_download(
            repo_id, revision=plan.revision, token=token or False, endpoint=hub_endpoint(),
            allow_patterns=[file.path for file in plan.files], tqdm_class=_stoppable(bars, stop), max_workers=4,
        ), stop)
    except Exception as exc:  # every hub failure becomes one user-facing message
        raise friendly_hub_error(exc, repo_id, token, revision) from None
    if progress:
        progress(1.0, f"Downloaded {repo_id}")
    return Downloaded(repo_id, Path(path), plan.missing_bytes == 0,
                      f"{repo_id}: {len(plan.files)} files, {human_size(plan.total_bytes)} in {path}")


def _check_room(plan: DownloadPlan) -> None:
    """DownloadError when the files left to download clearly do not fit on the cache's disk (huggingface_hub only
    warned, and the download failed half-way)."""
    import shutil

    folder = _cache_dir()
    try:
        free = shutil.disk_usage(next(path for path in (folder, *folder.parents) if path.exists())).free
    except (OSError, StopIteration):
        return  # the download says what is wrong
    if plan.missing_bytes > free:
        raise DownloadError(f"{plan.repo_id} needs {human_size(plan.missing_bytes)} more on disk, and {folder} has "
                            f"{human_size(free)} free: free some space there, or choose a folder on a larger disk "
                            "with HF_HUB_CACHE (or HF_HOME), then run it again.")


def _check_model(plan: DownloadPlan, token: str | None) -> None:
    """ModelLoadError before the weights are fetched for a model vlmchat cannot load (a text-only model, no processor
    files), told from config.json (fetched first: it is small) and the file list. Adapter repos have no config.json."""
    from huggingface_hub import hf_hub_download

    from .models.resolve import check_model_files, read_config

    names = {file.path for file in plan.files}
    if "config.json" not in names or "adapter_config.json" in names:  # some trainers save the base's config too
        return
    token, _ = resolve_token(token)
    try:
        config = hf_hub_download(plan.repo_id, "config.json", revision=plan.commit, token=token or False,
                                 endpoint=hub_endpoint())
    except Exception as exc:  # every hub failure becomes one user-facing message
        raise friendly_hub_error(exc, plan.repo_id, token, plan.revision) from None
    check_model_files(plan.repo_id, read_config(Path(config).parent), [file.path for file in plan.files])


def _said_by_us(record) -> bool:
    """False for huggingface_hub's lines about a cache it cannot write: the download's error says it."""
    return not record.getMessage().startswith("Ignored error while writing")


def _quiet_hub() -> None:
    """Hide huggingface_hub's warnings that vlmchat says itself, in its words (disk space, an unwritable cache)."""
    import logging
    import warnings

    warnings.filterwarnings("ignore", message="Not enough free disk space", category=UserWarning)
    for name in ("huggingface_hub._tree_cache", "huggingface_hub._snapshot_download"):
        logging.getLogger(name).addFilter(_said_by_us)


def cached_instead(repo_id: str, revision: str | None, error: OfflineError) -> Downloaded:
    """The fully cached copy of `repo_id` when the hub cannot be reached (offline mode or no connection); else
    `error` ("not cached and offline") is raised."""
    cached = cached_snapshot(repo_id, revision)
    if cached is None:
        raise error
    why = "offline mode is on" if is_offline() else "the hub cannot be reached"
    return Downloaded(repo_id, cached, True, f"{repo_id}: {why}, using the cached copy in {cached}")


CHUNK_BYTES = 2**20


def _small_chunks() -> None:
    """Have huggingface_hub read downloads in 1 MiB chunks (not 10 MiB) unless set smaller already.

    It reports progress, and can be stopped, once per chunk: 10 MiB is three seconds on a 3 MB/s line, so the
    progress bar jumped and Ctrl-C waited; 1 MiB costs nothing measurable in speed.
    """
    from huggingface_hub import constants

    constants.DOWNLOAD_CHUNK_SIZE = min(constants.DOWNLOAD_CHUNK_SIZE, CHUNK_BYTES)


class _Stopped(Exception):
    """Raised inside a download thread at its next chunk once the download was stopped."""


def _hub_tqdm():
    from huggingface_hub.utils import tqdm

    return tqdm


def _stoppable(bars: type, stop: threading.Event) -> type:
    """`bars` (the tqdm class snapshot_download reports through) raising _Stopped on update once `stop` is set.

    huggingface_hub's download threads report every chunk they write through it, so this is where they can be
    stopped: a thread cannot be interrupted from outside, and one left alone finishes its whole file.
    """

    class Stoppable(bars):
        def update(self, n=1):
            if stop.is_set():
                raise _Stopped("download stopped")
            return super().update(n)

    return Stoppable


def _stoppable_run(work: Callable[[], str], stop: threading.Event) -> str:
    """work() in a helper thread, waited for so that Ctrl-C reaches the caller at once (then `stop` is set).

    Run in this thread, snapshot_download would catch the Ctrl-C and wait for its pool's threads to finish their
    files before letting it through (a 514 MB download ran to its end). Waiting here instead, the caller gets the
    KeyboardInterrupt within a fraction of a second, and `stop` ends the pool's threads at their next chunk.
    """
    outcome: dict = {}

    def target() -> None:
        try:
            outcome["value"] = work()
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            outcome["error"] = exc

    helper = threading.Thread(target=target, name="vlmchat-download", daemon=True)
    helper.start()
    try:
        while helper.is_alive():
            helper.join(0.1)
    except KeyboardInterrupt:
        stop.set()
        raise
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def remember_token(token: str) -> None:
    """Save `token` with huggingface_hub's own login storage (as `hf auth login` does); it validates it first."""
    from huggingface_hub import login

    try:
        login(token=token, add_to_git_credential=False)
    except Exception as exc:  # a rejected token must not be saved, and must not be shown
        raise friendly_hub_error(exc, "your account", token) from None
