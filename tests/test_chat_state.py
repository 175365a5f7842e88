"""Chat state belongs to the session or the request: the adapter per call, failed turns never replayed,
no picture no invented answer; Compare's one vote per comparison; adapters made after start-up.

The first part runs the Chat tab's turn logic in-process on the demo model; the second drives the
launched app through gradio_client as API users do.
"""

import hashlib
import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest
from gradio_client import Client, handle_file

from vlmchat.chats import answered_turns, new_chat
from vlmchat.demo.dialogue import answer as demo_answer
from vlmchat.errors import InputError
from vlmchat.evaluate.compare import compare_stream, new_comparison, read_votes, record_vote, tally
from vlmchat.models.conversation import chat_messages
from vlmchat.models.conversation import NEEDS_IMAGE_KEY, model_flag
from vlmchat.ui.chat_tab import (ERROR_MARK, ChatTurns, chatbot_value, edit_turn, retry_turn,
                                 user_turn)


@pytest.fixture
def turns(manager, demo_settings):
    return ChatTurns(manager, demo_settings)


def _ask(turns, chat, text, *files, adapter="", **params):
    chat["messages"].append(user_turn({"text": text, "files": [str(f) for f in files]}))
    found = None
    for found in turns.answer(chat, adapter, **params):
        pass
    return found


def _fake(folder):
    path = folder / "fake.png"
    path.write_text("this is text, not a picture")
    return path


def test_an_answer_carries_its_tokens_speed_and_adapter(turns, picture_files):
    answer = _ask(turns, new_chat(), "Describe the image.", picture_files[("red", "circle")])
    assert answer["status"] == "ok" and answer["text"] == "a red circle"
    assert answer["adapter"] == "base" and answer["tokens"] >= 3 and answer["seconds"] > 0
    assert " s · adapter: base" in chatbot_value({"messages": [answer]})[0]["content"]


def test_the_adapter_is_per_call_and_never_global(turns, manager, picture_files):
    spanish, english = new_chat(), new_chat()
    picture = picture_files[("blue", "square")]
    assert _ask(turns, spanish, "Describe the image.", picture, adapter="demo-es")["text"] == "un cuadrado azul"
    assert _ask(turns, english, "Describe the image.", picture)["text"] == "a blue square"
    assert _ask(turns, spanish, "What shape is this?")["text"] == "cuadrado"  # the chat keeps its choice...
    assert manager.active_adapter is None  # ...and nothing changed for anyone else


def test_the_default_adapter_is_the_activated_one(turns, manager):
    assert turns.adapter_for("") == "base"
    manager.attach_named_adapter("demo-es")
    manager.activate_adapter("demo-es")
    try:
        assert turns.adapter_for("") == "demo-es" and turns.adapter_for("base") == "base"
    finally:
        manager.activate_adapter(None)


def test_a_bad_file_is_shown_once_and_never_replayed(turns, tmp_path, picture_files):
    chat = new_chat()
    failed = _ask(turns, chat, "Describe the image.", _fake(tmp_path))
    assert failed["status"] == "error" and failed["text"].startswith(ERROR_MARK) and "not an image" in failed["text"]
    assert _ask(turns, chat, "Describe the image.", picture_files[("green", "triangle")])["text"] == "a green triangle"
    assert _ask(turns, chat, "What color is the shape?")["text"] == "green"
    assert [m["text"] for m in answered_turns(chat["messages"])] == [
        "Describe the image.", "a green triangle", "What color is the shape?", "green"]
    # the same file attached again in another turn works too
    assert _ask(turns, chat, "What shape is this?", picture_files[("green", "triangle")])["text"] == "triangle"


def test_a_shared_apps_chat_keeps_its_errors_without_server_folders(manager, demo_settings, picture_files):
    """A failed turn's text is kept in the chat and its exports, so it is said there as a shared app says it:
    "There is no adapter named 'nope' in /srv/…/adapters." showed the server's folder (shared-app reviewer)."""
    adapters = str(demo_settings.paths.resolve("adapters"))
    local = _ask(ChatTurns(manager, demo_settings), new_chat(), "Describe the image.",
                 picture_files[("red", "circle")], adapter="nope")
    assert local["status"] == "error" and f"in {adapters} (renamed" in local["text"]  # a local user is told where
    shared = _ask(ChatTurns(manager, demo_settings.override("server", host="0.0.0.0")), new_chat(),
                  "Describe the image.", picture_files[("red", "circle")], adapter="nope")
    assert shared["status"] == "error" and "in adapters (renamed" in shared["text"] and adapters not in shared["text"]
    assert "choose one of: demo-es" in shared["text"]  # what to do (a chat's adapter renamed in the Adapters tab)


def test_a_too_large_file_is_refused_and_not_replayed(turns, demo_settings, tmp_path, picture_files):
    big = tmp_path / "big.png"
    big.write_bytes(b"\x89PNG" + bytes(demo_settings.server.max_upload_mb * 2**20 + 1))
    chat = new_chat()
    assert "over the" in _ask(turns, chat, "Describe the image.", big)["text"]
    assert _ask(turns, chat, "Describe the image.", picture_files[("red", "square")])["text"] == "a red square"


def test_a_stopped_answer_is_left_out_of_the_conversation(turns, picture_files):
    chat = new_chat()
    picture = picture_files[("blue", "circle")]
    chat["messages"].append(user_turn({"text": "Describe the image.", "files": [str(picture)]}))
    stream = turns.answer(chat, "")
    assert next(stream)["status"] == "pending"
    next(stream)  # the first words
    stream.close()  # what the Stop button (or a closed tab) does
    assert chat["messages"][-1]["status"] == "stopped"
    assert answered_turns(chat["messages"]) == []
    assert _ask(turns, chat, "Describe the image.", picture)["text"] == "a blue circle"
    # a picture sent with a stopped question stays: the next question is about it, not about the one before
    chat["messages"].append(user_turn({"text": "Describe the image.", "files": [str(picture_files[("red", "square")])]}))
    stream = turns.answer(chat, "")
    next(stream), next(stream)
    stream.close()
    assert _ask(turns, chat, "What color is the shape?")["text"] == "red"


def test_an_answer_stopped_while_an_endpoint_is_awaited_stays_stopped(turns, picture_files, monkeypatch):
    """Stop pressed while an endpoint had not answered yet: its timeout, seconds later, turned the turn into an
    error and the chat was saved so (API reviewer, a slow loopback server). The endpoint's late failure is played
    here by stream_answer raising as the endpoint client does; the Stop by what its handler does to the turn."""
    def late_failure(*args, **kwargs):
        raise InputError("Endpoint 'slow' did not answer within 5 s (asked twice: a timeout is retried once)")

    chat = new_chat()
    chat["messages"].append(user_turn({"text": "Describe the image.", "files": [str(picture_files[("red", "circle")])]}))
    stream = turns.answer(chat, "")
    assert next(stream)["status"] == "pending"
    chat["messages"][-1]["status"] = "stopped"  # the Stop button's handler
    monkeypatch.setattr(turns.manager, "stream_answer", late_failure)
    assert list(stream) == [] and chat["messages"][-1]["status"] == "stopped"


def test_no_picture_no_invented_answer(turns, picture_files):
    chat = new_chat()
    refused = _ask(turns, chat, "Describe the image.")
    assert refused["status"] == "error" and "answers only about a picture" in refused["text"]
    assert _ask(turns, chat, "What shape is this?", picture_files[("yellow", "square")])["text"] == "square"
    assert _ask(turns, chat, "What color is the shape?")["text"] == "yellow"  # the picture is in context


def test_only_a_model_that_says_so_needs_a_picture(manager, tmp_path):
    assert model_flag(manager, NEEDS_IMAGE_KEY)  # the demo's recipe states it
    (tmp_path / "vlmchat_recipe.json").write_text(json.dumps({"learning_rate": 1e-4}))
    chatty = SimpleNamespace(info=SimpleNamespace(source=str(tmp_path)))
    assert not model_flag(chatty, NEEDS_IMAGE_KEY)
    assert not model_flag(SimpleNamespace(info=SimpleNamespace(source="owner/hub-model")), NEEDS_IMAGE_KEY)


def test_a_second_picture_in_the_same_chat_is_answered_about(turns, picture_files):
    """The demo saw one picture per chat in training: a new picture starts its context afresh."""
    chat = new_chat()
    assert _ask(turns, chat, "Describe the image.", picture_files[("red", "circle")])["text"] == "a red circle"
    assert _ask(turns, chat, "Describe the image.", picture_files[("blue", "square")])["text"] == "a blue square"
    assert _ask(turns, chat, "What shape is this?")["text"] == "square"  # the newest picture stays in context


def test_two_pictures_in_one_message_are_refused_not_mixed_up(turns, picture_files):
    """The demo reads one picture at a time: asked about a red circle and a blue square together it answered
    "a blue circle"; now it says to send them one by one, and then answers each."""
    chat = new_chat()
    refused = _ask(turns, chat, "Describe the image.", picture_files[("red", "circle")],
                   picture_files[("blue", "square")])
    assert refused["status"] == "error" and "one picture at a time" in refused["text"]
    assert _ask(turns, chat, "Describe the image.", picture_files[("blue", "square")])["text"] == "a blue square"


def test_base_is_base_however_it_is_written(turns, picture_files):
    found = _ask(turns, new_chat(), "Describe the image.", picture_files[("red", "circle")], adapter="BASE")
    assert found["status"] == "ok" and found["text"] == "a red circle" and found["adapter"] == "base"


def test_an_unknown_adapter_is_a_failed_turn(turns, picture_files):
    found = _ask(turns, new_chat(), "Describe the image.", picture_files[("red", "circle")], adapter="nope")
    assert found["status"] == "error" and "no adapter named 'nope'" in found["text"]


def test_a_system_prompt_goes_first():
    chat = new_chat("Answer briefly.")
    chat["messages"].append({"role": "user", "text": "Hi", "images": []})
    messages = chat_messages(chat["messages"], chat["system"])
    assert [m["role"] for m in messages] == ["system", "user"]
    with pytest.raises(InputError, match="empty"):
        chat_messages([{"role": "user", "text": "  ", "images": []}])


def _shown_chat(picture):
    return {"messages": [
        {"role": "user", "text": "Describe the image.", "images": [{"path": str(picture), "name": "p.png"}]},
        {"role": "assistant", "text": "a red circle", "status": "ok"},
        {"role": "user", "text": "What color is the shape?", "images": []},
        {"role": "assistant", "text": "red", "status": "ok"}]}


def test_editing_a_question_drops_what_came_after_it(picture_files):
    chat = _shown_chat(picture_files[("red", "circle")])
    assert [m["content"] if isinstance(m["content"], str) else "🖼" for m in chatbot_value(chat)] == [
        "🖼", "Describe the image.", "a red circle", "What color is the shape?", "red"]
    assert not edit_turn(chat, 0, "x") and not edit_turn(chat, 2, "x")  # a picture, an answer: not editable
    assert edit_turn(chat, 1, "What shape is this?")
    assert [m["text"] for m in chat["messages"]] == ["What shape is this?"]
    assert chat["messages"][0]["images"]  # the picture stays with the question


def test_regenerating_drops_the_answer_and_keeps_the_question(picture_files):
    chat = _shown_chat(picture_files[("red", "circle")])
    assert retry_turn(chat, 4)
    assert [m["text"] for m in chat["messages"]] == ["Describe the image.", "a red circle", "What color is the shape?"]


def test_retry_or_an_edit_while_an_answer_streams_stops_that_answer(turns, picture_files):
    """Retry and edit are clickable while an answer streams; the answer they dropped went on being written (the
    model busy, its turn gone from the chat). Now it is stopped: its stream ends at its next piece."""
    for change in (lambda chat, shown: retry_turn(chat, shown), lambda chat, shown: edit_turn(chat, shown - 1, "Hi")):
        chat = new_chat()
        chat["messages"].append(user_turn({"text": "Describe the image.",
                                           "files": [str(picture_files[("red", "circle")])]}))
        answer = turns.answer(chat, "")
        turn = next(answer)  # the answer has begun (its pending turn is in the chat)
        assert turn["status"] == "pending" and chat["messages"][-1] is turn
        assert change(chat, len(chatbot_value(chat)) - 1)
        rest = list(answer)
        assert turn["status"] == "stopped" and turn["text"] == "" and not rest  # it wrote nothing more
        assert turn not in chat["messages"] and chat["messages"][-1]["role"] == "user"
        assert list(turns.answer(chat, ""))[-1]["status"] == "ok"  # answered again: the model is free for it


def test_compare_refuses_without_a_picture(manager):
    with pytest.raises(InputError, match="needs a picture"):
        list(compare_stream(manager, None, "Describe the image.", "base", "demo-es"))


def test_one_vote_per_comparison_and_a_tally(tmp_path, picture_files):
    log = tmp_path / "votes.jsonl"
    picture = picture_files[("red", "circle")]
    first = new_comparison(picture, "Describe the image.", "base", "demo-es", 3, model="demo") | {
        "left_text": "a red circle", "right_text": "un círculo rojo"}
    second = new_comparison(picture, "Describe the image.", "base", "demo-es", 3) | {
        "left_text": "a", "right_text": "b"}
    record_vote(log, "left", first)
    record_vote(log, "tie", first)  # changed its mind: replaces
    record_vote(log, "right", second)
    votes = read_votes(log)
    assert [v["vote"] for v in votes] == ["tie", "right"]
    assert votes[0]["image_sha256"] == hashlib.sha256(picture.read_bytes()).hexdigest()
    assert {k: votes[0][k] for k in ("prompt", "left", "right", "seed", "left_text", "right_text")} == {
        "prompt": "Describe the image.", "left": "base", "right": "demo-es", "seed": 3,
        "left_text": "a red circle", "right_text": "un círculo rojo"}
    assert votes[0]["time"] and votes[0]["compared"]
    assert tally(votes) == [["demo-es", 2, 1, 0, 1, 0], ["base", 2, 0, 1, 1, 0]]
    with pytest.raises(InputError, match="before voting"):
        record_vote(log, "left", None)


# ---- through the launched app, as API users ----

def _chat(client, text, *files, **options):
    message = {"text": text, "files": [handle_file(str(f)) for f in files]}
    return client.predict(message, api_name="/chat", **options).strip()


def test_eight_concurrent_clients_each_get_their_own_adapter(app, picture_files):
    cases = [(key, path, "demo-es" if index % 2 else "base") for index, (key, path) in
             enumerate(list(picture_files.items())[:8])]

    def ask(case):
        (colour, shape), path, adapter = case
        client = Client(app.url, verbose=False)
        first = _chat(client, "Describe the image.", path, adapter=adapter)
        follow_up = _chat(client, "What shape is this?", adapter=adapter)
        return first, follow_up

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(ask, cases))
    expected = [(demo_answer("caption", c, s, "es" if a == "demo-es" else "en"),
                 demo_answer("shape", c, s, "es" if a == "demo-es" else "en")) for (c, s), _, a in cases]
    assert answers == expected
    assert sum(a == "demo-es" for *_, a in cases) == 4


def test_a_session_starts_with_the_default_adapter_and_keeps_its_choice(app, picture_files):
    client = Client(app.url, verbose=False)
    picture = picture_files[("red", "triangle")]
    assert _chat(client, "Describe the image.", picture) == "a red triangle"
    assert _chat(client, "What shape is this?", adapter="demo-es") == "triángulo"  # per request
    assert _chat(client, "What color is the shape?") == "rojo"  # the session keeps its choice
    assert _chat(client, "What shape is this?", adapter="base") == "triangle"
    client.reset_session()
    assert _chat(client, "Describe the image.", picture) == "a red triangle"  # a new session: the default


def test_chat_answers_a_file_that_is_not_named_as_a_picture_with_what_to_do(app, tmp_path, picture_files):
    """Gradio refused these before the loader saw them ("Invalid file type: None", an exception)."""
    client = Client(app.url, verbose=False)
    (tmp_path / "notes.txt").write_text("my notes")
    answer = _chat(client, "Describe the image.", tmp_path / "notes.txt")
    assert answer.startswith("⚠️") and "not an image" in answer
    unnamed = tmp_path / "picture"  # a PNG without an extension is still a picture
    unnamed.write_bytes(picture_files[("red", "circle")].read_bytes())
    assert _chat(client, "Describe the image.", unnamed) == "a red circle"


def test_chat_takes_the_answer_settings_that_settings_toml_takes(app, picture_files):
    """settings.toml took max_new_tokens up to 8192 and temperature up to 5, the Chat tab and /chat 4096 and 2."""
    client = Client(app.url, verbose=False)
    assert _chat(client, "What shape is this?", picture_files[("red", "circle")], max_new_tokens=8192) == "circle"
    with pytest.raises(Exception, match=r"Temperature must be from 0 to 2 \(got 2.5\)"):
        _chat(client, "What shape is this?", picture_files[("red", "circle")], temperature=2.5)


def test_chat_without_a_picture_says_to_attach_one(app):
    answer = _chat(Client(app.url, verbose=False), "Describe the image.")
    assert answer.startswith("⚠️") and "attach one" in answer


def test_compare_without_a_picture_is_refused(app):
    with pytest.raises(Exception, match="Compare needs a picture"):
        Client(app.url, verbose=False).predict(None, "Describe the image.", "base", "demo-es", api_name="/compare")


def test_compare_answers_a_bad_file_with_what_to_do_and_then_works(app, tmp_path, picture_files):
    client = Client(app.url, verbose=False)
    (tmp_path / "fake.png").write_text("not a picture")
    (tmp_path / "empty.png").write_bytes(b"")
    for name, reason in (("fake.png", "not an image vlmchat can read"), ("empty.png", "is empty")):
        with pytest.raises(Exception, match=reason):
            client.predict(handle_file(str(tmp_path / name)), "Describe the image.", "base", "demo-es",
                           api_name="/compare")
    assert client.predict(handle_file(str(picture_files[("red", "circle")])), "Describe the image.", "base",
                          "demo-es", api_name="/compare") == ("a red circle", "un círculo rojo")


def test_an_adapter_made_after_start_up_works_everywhere(app, picture_files):
    adapters = Path(app.log.name).parent / "adapters"
    late = adapters / "demo-es-late"
    shutil.copytree(adapters / "demo-es", late)
    try:
        client = Client(app.url, verbose=False)
        assert "demo-es-late" in client.predict(api_name="/list_adapters")
        picture = picture_files[("green", "circle")]
        assert client.predict(handle_file(str(picture)), "Describe the image.", "base", "demo-es-late",
                              api_name="/compare") == ("a green circle", "un círculo verde")
        assert _chat(client, "Describe the image.", picture, adapter="demo-es-late") == "un círculo verde"
        with pytest.raises(Exception, match="named 'nope'"):
            client.predict(handle_file(str(picture)), "Describe the image.", "base", "nope", api_name="/compare")
    finally:
        shutil.rmtree(late)


def test_a_chat_deleted_in_another_tab_says_so_at_its_next_question(turns, tmp_path, picture_files):
    """Tab A still showed a chat tab B had deleted: A's next question got "Image file 'x.png' was not found; check
    the path", which means nothing in a chat (browser reviewer)."""
    import shutil

    from vlmchat.chats import ChatStore

    store = ChatStore(tmp_path / "chats")
    chat = new_chat()
    assert _ask(turns, chat, "Describe the image.", picture_files[("red", "circle")])["text"] == "a red circle"
    chat = store.save(chat)
    shutil.rmtree(store.path(chat["id"]))  # what Delete in the other tab does
    found = _ask(turns, chat, "What color is the shape?")
    assert found["status"] == "error" and "deleted in another tab or window" in found["text"]
    assert "attach the picture again" in found["text"] and "check the path" not in found["text"]


def test_each_answer_keeps_the_system_prompt_it_answered_under(turns, picture_files):
    """The chat kept only its last system prompt: an export did not say the first answer had another (tester)."""
    from vlmchat.chats import to_markdown

    chat = new_chat()
    first = _ask(turns, chat, "Describe the image.", picture_files[("red", "circle")])
    chat["system"] = "Answer briefly."
    second = _ask(turns, chat, "What color is the shape?")
    assert (first["system"], second["system"]) == ("", "Answer briefly.")
    markdown = to_markdown(chat)
    assert markdown.count("system prompt then: none") == 1 and "*System prompt:* Answer briefly." in markdown


def _in_gradios_cache(path, cache):
    """`path` copied into Gradio's cache as Gradio copies an upload, a shown picture or a download."""
    from gradio.processing_utils import save_file_to_cache

    return Path(save_file_to_cache(path, str(cache)))


def test_deleting_a_chat_removes_the_copies_gradio_handed_out_and_a_saved_chat_needs_none(
        manager, demo_settings, tmp_path, monkeypatch, picture_files):
    """Bob exported a chat and deleted it: its export and its picture's copy in Gradio's cache still downloaded
    (tester). Pictures' copies stay (shared by content); a saved chat shows the copies in its own folder, so it
    reopens with its pictures after Gradio's cache is emptied."""
    import gradio as gr

    from vlmchat.ui.chat_tab import build_chat_tab

    cache = tmp_path / "gradio"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(cache))
    with gr.Blocks() as blocks:
        build_chat_tab(manager, demo_settings, None)
    handlers = {block_fn.name: block_fn.fn for block_fn in blocks.fns.values()}
    request = SimpleNamespace(username="cache-tester", session_hash="s1")
    turns = ChatTurns(manager, demo_settings)
    store = turns.store(request)
    chats, handed_out = [], {}
    for _ in range(2):  # two chats about the same picture, uploaded, shown and exported as the page does
        upload = _in_gradios_cache(picture_files[("red", "circle")], cache)
        chat = new_chat()
        assert _ask(turns, chat, "Describe the image.", upload)["text"] == "a red circle"
        store.save(chat)
        shown = [_in_gradios_cache(m["content"]["path"], cache) for m in chatbot_value(chat)
                 if isinstance(m["content"], dict)]
        exported, _ = handlers["export_as"](chat, request)
        handed_out[chat["id"]] = [upload, *shown, _in_gradios_cache(exported, cache)]
        chats.append(chat)
    first, second = chats
    handlers["delete"](first, request)
    assert not handed_out[first["id"]][-1].exists()  # its export
    assert all(path.exists() for path in handed_out[second["id"]])  # the picture the other chat shows too
    shutil.rmtree(cache)  # Gradio empties its cache (delete_cache, a restart)
    reopened = store.load(second["id"])
    pictures = [Path(m["content"]["path"]) for m in chatbot_value(reopened) if isinstance(m["content"], dict)]
    assert pictures and all(p.is_file() and p.is_relative_to(store.path(second["id"])) for p in pictures)
    shown = [_in_gradios_cache(p, cache) for p in pictures]  # shown again: copied again
    exported, _ = handlers["export_as"](reopened, request)
    exported = _in_gradios_cache(exported, cache)
    handlers["delete"](reopened, request)
    # Its export goes; a picture's copy stays for Gradio's hourly cleanup: it is named by its content, so the same
    # bytes may be another login's picture or an example's (deleting it broke the example for everyone; reviewer).
    assert not exported.exists() and all(path.exists() for path in shown)
