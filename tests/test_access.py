"""Logins: given, read from a file, or generated when the app is reachable from other machines."""

import dataclasses

import pytest

from vlmchat.ui.access import GENERATED_USER, read_auth_file, resolve_access
from vlmchat.errors import SettingsError
from vlmchat.settings import Settings


def _settings(**server):
    return dataclasses.replace(Settings(), server=dataclasses.replace(Settings().server, **server))


def test_loopback_without_login_stays_open():
    assert resolve_access(_settings()).logins == ()


@pytest.mark.parametrize("server", [{"share": True}, {"host": "0.0.0.0"}, {"host": "192.168.1.5"}])
def test_exposed_without_login_gets_a_generated_password(server):
    access = resolve_access(_settings(**server))
    (user, password), = access.logins
    assert access.generated and user == GENERATED_USER and len(password) >= 16
    assert resolve_access(_settings(**server)).logins[0][1] != password  # fresh every start


def test_given_logins_are_used(tmp_path):
    file = tmp_path / "logins.txt"
    file.write_text("# team\nana:secret1\n\nbob:secret2\n")
    access = resolve_access(_settings(host="0.0.0.0", auth="me:pw"), str(file))
    assert access.logins == (("me", "pw"), ("ana", "secret1"), ("bob", "secret2")) and not access.generated


@pytest.mark.parametrize("text, message", [("nocolon\n", "Line 1"), (":pw\n", "Line 1"), ("# only\n", "no 'user:password'")])
def test_bad_auth_files_are_explained(tmp_path, text, message):
    file = tmp_path / "logins.txt"
    file.write_text(text)
    with pytest.raises(SettingsError, match=message):
        read_auth_file(file)


def test_missing_auth_file(tmp_path):
    with pytest.raises(SettingsError, match="Cannot read the auth file"):
        read_auth_file(tmp_path / "none.txt")


def test_an_auth_file_from_notepad_logs_in_as_written(tmp_path):
    """A BOM made the first user '\\ufeffalice', and ' carol :x' the user 'carol ': neither could log in (the login
    form strips the name typed). A password is kept exactly as written after the first ':'."""
    file = tmp_path / "logins.txt"
    file.write_bytes("\ufeffalice:wonder:land\r\n carol :spaced \r\neve:  lead and trail  \r\n".encode())
    assert read_auth_file(file) == [("alice", "wonder:land"), ("carol", "spaced "), ("eve", "  lead and trail  ")]


def test_a_user_given_twice_is_refused_naming_both_lines(tmp_path):
    file = tmp_path / "logins.txt"
    file.write_text("bob:builder\n# again\nbob :other\n")
    with pytest.raises(SettingsError, match="Lines 1 and 3 of .* both give the user 'bob'"):
        read_auth_file(file)
    file.write_text("ana:secret1\n")
    with pytest.raises(SettingsError, match="'ana' is given by --auth / server.auth and in"):
        resolve_access(_settings(auth="ana:other"), str(file))
