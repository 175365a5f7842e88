"""Whose files these are: the login behind a request, and the folder that login's files live in.

Locally (no login) every file stays where it always was; when the app asks for a login, each user's
uploads, jobs, eval runs, saved chats and caption results go under `<base>/users/<user>/`, and
nobody else's requests look there.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path


def login_of(request) -> str | None:
    """The logged-in user name of a gr.Request (None when the app has no login)."""
    return getattr(request, "username", None) or None


def session_of(request) -> str:
    """The page's or API client's session of a gr.Request ('' without one)."""
    return getattr(request, "session_hash", None) or ""


def user_folder(base: Path, request) -> Path:
    """`base` itself locally; `base/users/<readable name>-<hash>` for a logged-in user."""
    user = login_of(request)
    if user is None:
        return Path(base)
    readable = re.sub(r"[^A-Za-z0-9_-]+", "_", user)[:32] or "user"
    return Path(base) / "users" / f"{readable}-{hashlib.sha256(user.encode()).hexdigest()[:10]}"


def owns(path: Path, base: Path, request) -> bool:
    """Whether `path` lies inside the request's own folder under `base` (locally: inside `base`)."""
    mine = user_folder(base, request).resolve()
    target = Path(path).resolve()
    if login_of(request) is None:
        return target.is_relative_to(Path(base).resolve())
    return target.is_relative_to(mine)


def _trainer(adapter) -> str | None:
    """The users/<name>-<hash> folder of the login whose upload `adapter` (a store.AdapterInfo) was trained on, or
    that imported it; None for an adapter trained on anything else, or imported without a login (it belongs to all).
    An imported adapter's dataset path is not read: it was written where it was trained, maybe by anyone."""
    if adapter.owner is not None:
        return adapter.owner or None
    path = adapter.dataset.get("path") if isinstance(adapter.dataset, dict) else None
    parts = Path(path).parts if isinstance(path, str) else ()
    folders = [parts[i + 1] for i in range(len(parts) - 1) if parts[i] == "users"]
    return folders[-1] if folders else None


def _trained_by(adapter, request) -> bool:
    """Whether `adapter` was trained on an upload of the request's own login."""
    trainer = _trainer(adapter)
    return trainer is not None and login_of(request) is not None and trainer == user_folder(Path("."), request).name


def trained_by_another(adapter, request) -> bool:
    """Whether `adapter` was trained on an upload of a login other than the request's."""
    return _trainer(adapter) is not None and not _trained_by(adapter, request)


def refuse_anothers_adapter(adapters: Path, name: str, request, doing: str) -> None:
    """InputError when adapter `name` in `adapters` was trained on another login's upload: only that login may
    `doing` it (rename, delete, export, replace). Using it in Chat, Compare or Evaluate stays open to all."""
    from ..errors import InputError
    from ..lora.store import list_adapters

    found = next((adapter for adapter in list_adapters(adapters) if adapter.name == name), None)
    if found is not None and trained_by_another(found, request):
        raise InputError(f"'{name}' was trained by another login; only that login can {doing} it.")
    if found is not None and doing == "replace" and login_of(request) is not None and not _trained_by(found, request):
        # Trained again by a login, an adapter everyone shares (demo-es) would become that login's alone.
        raise InputError(f"'{name}' is shared by everyone on this app; a login can replace only the adapters it "
                         "trained itself. Give the new adapter another name.")
