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
    user, sep, password = text.strip().partition(":")
    if not sep or not user or not password:
        raise SettingsError(f"{where} must look like 'user:password' (both non-empty).")
    return user, password


def read_auth_file(path: str | Path) -> list[tuple[str, str]]:
    """Logins from a file with one 'user:password' per line (blank lines and # comments skipped)."""
    file = Path(path).expanduser()
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise SettingsError(f"Cannot read the auth file {file}: {exc.strerror}; check the path.") from None
    logins = [_parse_login(line, f"Line {n} of {file}") for n, line in enumerate(lines, 1)
              if line.strip() and not line.lstrip().startswith("#")]
    if not logins:
        raise SettingsError(f"The auth file {file} holds no 'user:password' line.")
    return logins


def resolve_access(settings: Settings, auth_file: str | None = None) -> Access:
    """The logins to require, generating one if the app is exposed and none was given."""
    logins: list[tuple[str, str]] = []
    if settings.server.auth:
        logins.append(_parse_login(settings.server.auth, "--auth / server.auth"))
    if auth_file:
        logins.extend(read_auth_file(auth_file))
    if logins or not settings.server.exposed:
        return Access(tuple(logins))
    return Access(((GENERATED_USER, secrets.token_urlsafe(12)),), generated=True)
