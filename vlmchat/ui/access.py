"""Who may use the app: logins from --auth, --auth-file or settings, and a generated one when needed.

Whenever the app is reachable from other machines (a share link or a non-loopback host) a login
is required; without one given, a random password is generated and shown once in the terminal.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

from ..errors import SettingsError
from ..settings import Settings

GENERATED_USER = "vlmchat"


@dataclass(frozen=True)
class Access:
    """The logins the server accepts (empty = open, loopback only) and whether we made one up."""

    logins: tuple[tuple[str, str], ...] = ()
    generated: bool = False


def _parse_login(text: str, where: str) -> tuple[str, str]:
    """(user, password): the user name without the spaces around it (the login form strips the name typed), the
    password exactly as written after the first ':'."""
    user, sep, password = text.partition(":")
    user = user.strip()
    if not sep or not user or not password:
        raise SettingsError(f"{where} must look like 'user:password' (both non-empty).")
    return user, password


def read_auth_file(path: str | Path) -> list[tuple[str, str]]:
    """Logins from a file with one 'user:password' per line (blank lines and # comments skipped)."""
    file = Path(path).expanduser()
    try:
        lines = file.read_text(encoding="utf-8-sig").splitlines()  # -sig: Notepad starts the file with a BOM
    except OSError as exc:
        raise SettingsError(f"Cannot read the auth file {file}: {exc.strerror}; check the path.") from None
    logins, lines_of = [], {}
    for n, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        user, password = _parse_login(line, f"Line {n} of {file}")
        if user in lines_of:  # the login form would take only the last one
            raise SettingsError(f"Lines {lines_of[user]} and {n} of {file} both give the user {user!r}; keep one.")
        lines_of[user] = n
        logins.append((user, password))
    if not logins:
        raise SettingsError(f"The auth file {file} holds no 'user:password' line.")
    return logins


def resolve_access(settings: Settings, auth_file: str | None = None) -> Access:
    """The logins to require, generating one if the app is exposed and none was given."""
    logins: list[tuple[str, str]] = []
    if settings.server.auth:
        logins.append(_parse_login(settings.server.auth, "--auth / server.auth"))
    if auth_file:
        from_file = read_auth_file(auth_file)
        if logins and logins[0][0] in dict(from_file):
            raise SettingsError(f"The user {logins[0][0]!r} is given by --auth / server.auth and in {auth_file}; "
                                "keep one.")
        logins.extend(from_file)
    if logins or not settings.server.exposed:
        return Access(tuple(logins))
    return Access(((GENERATED_USER, secrets.token_urlsafe(12)),), generated=True)
