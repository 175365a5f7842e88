"""Adapters and Compare through the launched app's API, as a gradio_client user would."""

import json

import pytest
from gradio_client import Client, handle_file


@pytest.fixture
def client(app):
    return Client(app.url, verbose=False)


def test_list_adapters_includes_the_shipped_demo_adapter(client):
    assert "demo-es" in client.predict(api_name="/list_adapters")


def test_compare_base_with_the_spanish_adapter(client, picture_files):
    left, right = client.predict(handle_file(str(picture_files[("yellow", "square")])), "Describe the image.",
                                 "base", "demo-es", api_name="/compare")
    assert (left, right) == ("a yellow square", "un cuadrado amarillo")


def test_activate_adapter_changes_the_chat_language(client, picture_files):
    message = {"text": "What shape is this?", "files": [handle_file(str(picture_files[("blue", "triangle")]))]}
    try:
        assert "demo-es" in client.predict("demo-es", api_name="/activate_adapter")
        assert client.predict(message, api_name="/chat").strip() == "triángulo"
    finally:
        client.predict("base", api_name="/activate_adapter")
    client.reset_session()
    assert client.predict(message, api_name="/chat").strip() == "triangle"


@pytest.mark.parametrize("name, message", [("nope", "no adapter named 'nope'"),
                                           ("../../etc", "not a valid adapter name")])
def test_bad_adapter_names_get_a_clear_error(client, name, message):
    with pytest.raises(Exception, match=message.replace("(", r"\(")):
        client.predict(name, api_name="/activate_adapter")


def test_unload_of_an_adapter_never_loaded_says_so(manager, demo_settings):
    """It said "Unloaded 'x'." of an adapter that was never loaded (blind tester)."""
    from vlmchat.ui.adapters_tab import AdapterActions

    said = AdapterActions(manager, demo_settings).unload("never-loaded")
    assert said.startswith("'never-loaded' is not loaded; nothing to unload (resident: ")
