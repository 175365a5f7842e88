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
