"""Saved conversations on disk (vlmchat/chats.py): one folder per chat with copies of its pictures,
newest first, renamed, deleted, exported; one folder per login."""

import base64
import json
from types import SimpleNamespace

import pytest
from PIL import Image

from vlmchat.chats import ChatStore, answered_turns, new_chat, to_markdown
from vlmchat.errors import InputError
from vlmchat.ui.users import user_folder


@pytest.fixture
def picture(tmp_path):
    path = tmp_path / "upload" / "red.png"
    path.parent.mkdir()
    Image.new("RGB", (16, 16), (255, 0, 0)).save(path)
    return path


def _chat(picture, *turns):
    chat = new_chat("Answer briefly.")
    chat["messages"] = [{"role": "user", "text": "Describe the image.",
                         "images": [{"path": str(picture), "name": "red.png"}]},
                        {"role": "assistant", "text": "a red square", "status": "ok", "adapter": "base",
                         "tokens": 3, "seconds": 0.1}, *turns]
    return chat


def test_a_saved_chat_keeps_a_copy_of_its_pictures_and_reloads(tmp_path, picture):
    store = ChatStore(tmp_path / "chats")
    chat = store.save(_chat(picture))
    folder = tmp_path / "chats" / chat["id"]
    data = json.loads((folder / "chat.json").read_text(encoding="utf-8"))
    stored = data["messages"][0]["images"][0]
    assert stored["file"].startswith("images/") and stored["name"] == "red.png" and len(stored["sha256"]) == 64
    assert (folder / stored["file"]).read_bytes() == picture.read_bytes()
    assert str(picture) not in (folder / "chat.json").read_text()  # no path outside the chat folder
    picture.unlink()  # the upload is gone (a restart empties Gradio's cache); the copy stays
    loaded = store.load(chat["id"])
    assert loaded["messages"][0]["images"][0]["path"] == str(folder / stored["file"])
    assert loaded["system"] == "Answer briefly." and loaded["title"] == "Describe the image. · 📎 red.png"
    assert [m["text"] for m in loaded["messages"]] == ["Describe the image.", "a red square"]
    assert not [p for p in folder.rglob("*") if p.name.startswith(".")]  # no temp file left behind


def test_chats_are_listed_newest_first_and_a_rename_sticks(tmp_path, picture):
    store = ChatStore(tmp_path / "chats")
    first = store.save(_chat(picture))
    second = _chat(picture)
    second["messages"][0]["text"] = "What colour is it?"
    second = store.save(second)
    older = tmp_path / "chats" / first["id"] / "chat.json"  # saved in the same second: make it older
    older.write_text(older.read_text(encoding="utf-8").replace(first["updated"], "2000-01-01T00:00:00Z"),
                     encoding="utf-8")
    assert [c["id"] for c in store.list()] == [second["id"], first["id"]]
    store.rename(first["id"], "  My   red square ")
    # the question and its picture; a rename keeps its place
    assert [c["title"] for c in store.list()] == ["What colour is it? · 📎 red.png", "My red square"]
    reopened = store.load(first["id"])
    reopened["messages"] += [{"role": "user", "text": "And again?", "images": []}]
    store.save(reopened)  # a renamed chat keeps its title as it grows
    assert store.load(first["id"])["title"] == "My red square"


def test_a_failed_turn_keeps_only_the_name_of_its_file(tmp_path, picture):
    fake = tmp_path / "upload" / "fake.png"
    fake.write_text("not a picture")
    chat = _chat(picture, {"role": "user", "text": "And this?", "images": [{"path": str(fake), "name": "fake.png"}]},
                 {"role": "assistant", "text": "⚠️ 'fake.png' is not an image", "status": "error"})
    chat = ChatStore(tmp_path / "chats").save(chat)
    images = list((tmp_path / "chats" / chat["id"] / "images").iterdir())
    assert len(images) == 1 and images[0].read_bytes() == picture.read_bytes()
    assert chat["messages"][2]["images"] == [{"name": "fake.png"}]


def test_answered_turns_leave_out_failed_stopped_and_unanswered_turns(picture):
    ok = _chat(picture)["messages"]
    failed = [{"role": "user", "text": "x", "images": []}, {"role": "assistant", "text": "⚠️", "status": "error"}]
    stopped = [{"role": "user", "text": "y", "images": []}, {"role": "assistant", "text": "par", "status": "stopped"}]
    lost = [{"role": "user", "text": "lost in a crash", "images": []}]
    waiting = [{"role": "user", "text": "now", "images": []}]
    assert answered_turns(ok + failed + stopped + lost + ok + waiting) == ok + ok + waiting



def test_pictures_read_by_a_left_out_turn_go_with_the_next_question(picture, tmp_path):
    """After Stop (or an endpoint's failure) the next question was answered about the picture before the stopped
    one, while the stopped one showed last (browser reviewer); a picture that could not be read stays out."""
    blue = {"path": str(picture), "name": "blue.png"}
    stopped = [{"role": "user", "text": "y", "images": [blue]}, {"role": "assistant", "text": "", "status": "stopped"}]
    endpoint_down = [{"role": "user", "text": "z", "images": [dict(blue, name="b2.png")]},
                     {"role": "assistant", "text": "⚠️ down", "status": "error", "read": True}]
    unreadable = [{"role": "user", "text": "w", "images": [{"path": str(tmp_path / "gone.png"), "name": "g.png"}]},
                  {"role": "assistant", "text": "⚠️ not an image", "status": "error"}]
    waiting = {"role": "user", "text": "What color is it?", "images": []}
    kept = answered_turns(stopped + endpoint_down + unreadable + [waiting])
    assert [m["text"] for m in kept] == ["What color is it?"]
    assert [image["name"] for image in kept[0]["images"]] == ["blue.png", "b2.png"]
    own = dict(waiting, images=[dict(blue, name="own.png")])  # a question with its own picture moved on
    assert [image["name"] for image in answered_turns(stopped + [own])[0]["images"]] == ["own.png"]
    chat = ChatStore(tmp_path / "chats").save(_chat(picture, *endpoint_down))  # an endpoint's failure keeps it
    assert chat["messages"][2]["images"][0].get("path")


def test_a_chat_interrupted_while_answering_reopens_as_stopped(tmp_path, picture):
    store = ChatStore(tmp_path / "chats")
    chat = _chat(picture, {"role": "user", "text": "More?", "images": []},
                 {"role": "assistant", "text": "a re", "status": "pending"})
    chat = store.save(chat)
    assert store.load(chat["id"])["messages"][-1]["status"] == "stopped"


def test_delete_removes_the_folder(tmp_path, picture):
    store = ChatStore(tmp_path / "chats")
    chat = store.save(_chat(picture))
    store.delete(chat["id"])
    assert store.list() == [] and not (tmp_path / "chats" / chat["id"]).exists()
    with pytest.raises(InputError, match="already gone"):
        store.delete(chat["id"])


def test_exports_are_self_contained(tmp_path, picture):
    store = ChatStore(tmp_path / "chats")
    chat = store.save(_chat(picture))
    markdown = store.export(chat["id"], "markdown").read_text(encoding="utf-8")
    assert markdown.startswith("# Describe the image.") and "*System prompt:* Answer briefly." in markdown
    assert "![red.png](data:image/png;base64," in markdown and "3 tokens · 30.0 tokens/s · 0.10 s · adapter: base" in markdown
    exported = json.loads(store.export(chat["id"], "json").read_text(encoding="utf-8"))
    url = exported["messages"][0]["images"][0]["data_url"]
    assert base64.b64decode(url.split(",", 1)[1]) == picture.read_bytes()
    assert exported["messages"][1] == chat["messages"][1] and str(tmp_path) not in json.dumps(exported)


@pytest.mark.parametrize("bad", ["../../etc", "20250101-120000-zzzzzz", "", "x/../y"])
def test_only_chat_ids_open_a_folder(tmp_path, bad):
    with pytest.raises(InputError, match="not a saved chat"):
        ChatStore(tmp_path / "chats").load(bad)


def test_a_tampered_file_cannot_point_outside_its_chat(tmp_path, picture):
    store = ChatStore(tmp_path / "chats")
    chat = store.save(_chat(picture))
    path = tmp_path / "chats" / chat["id"] / "chat.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    data["messages"][0]["images"][0]["file"] = "../../upload/red.png"
    path.write_text(json.dumps(data), encoding="utf-8")
    assert "path" not in store.load(chat["id"])["messages"][0]["images"][0]


def test_each_login_has_its_own_chats(tmp_path, picture):
    ana, bob = (SimpleNamespace(username=name) for name in ("ana", "bob"))
    ChatStore(user_folder(tmp_path, ana) / "chats").save(_chat(picture))
    assert len(ChatStore(user_folder(tmp_path, ana) / "chats").list()) == 1
    assert ChatStore(user_folder(tmp_path, bob) / "chats").list() == []
    assert ChatStore(user_folder(tmp_path, SimpleNamespace(username=None)) / "chats").list() == []


def test_markdown_marks_failed_and_stopped_answers(picture):
    chat = _chat(picture, {"role": "user", "text": "More?", "images": []},
                 {"role": "assistant", "text": "a re", "status": "stopped"})
    assert "**Assistant (stopped):**" in to_markdown(chat)


def _turn(text, answer):
    return [{"role": "user", "text": text, "images": []}, {"role": "assistant", "text": answer, "status": "ok"}]


def test_two_tabs_on_one_chat_lose_nothing(tmp_path, picture):
    """Two tabs with the same chat open: each saved over the other (a turn lost for good, a rename undone, a
    deleted chat brought back). What the other tab saved is now kept."""
    store = ChatStore(tmp_path / "chats")
    chat_id = store.save(_chat(picture))["id"]
    one, two = store.load(chat_id), store.load(chat_id)
    one["messages"] += _turn("What color is the shape?", "red")
    store.save(one)
    two["messages"] += _turn("What shape is this?", "square")
    store.save(two)  # went on from the same start with a turn of its own: saved as a new chat
    assert two["id"] != chat_id and two["title"].endswith("(copy)")
    assert [m["text"] for m in store.load(chat_id)["messages"]][-1] == "red"
    assert [m["text"] for m in store.load(two["id"])["messages"]][-1] == "square"
    assert store.load(two["id"])["messages"][0]["images"][0]["path"]  # its pictures came along

    three = store.load(chat_id)
    store.rename(chat_id, "Shapes")  # in another tab
    three["messages"] += _turn("What shape is this?", "square")
    store.save(three)  # the rename is taken over, the turn added to the same chat
    saved = store.load(chat_id)
    assert three["id"] == chat_id and saved["title"] == "Shapes" and saved["messages"][-1]["text"] == "square"

    four = store.load(chat_id)
    store.delete(chat_id)  # in another tab
    four["messages"] += _turn("What color is the shape?", "red")
    store.save(four)
    assert not (tmp_path / "chats" / chat_id).exists() and four["id"] != chat_id


def test_the_title_comes_from_the_first_answered_question(tmp_path, picture):
    """A chat was titled "Describe the image. · 📎 pic.svg" after that picture was refused (tester)."""
    store = ChatStore(tmp_path / "chats")
    chat = new_chat()
    chat["messages"] = [{"role": "user", "text": "Describe the image.", "images": [{"path": str(picture),
                                                                                    "name": "pic.svg"}]},
                        {"role": "assistant", "text": "⚠️ 'pic.svg' is an SVG drawing", "status": "error"}]
    assert store.save(chat)["title"] == "Describe the image. · 📎 pic.svg"  # nothing answered yet
    chat["messages"] += _chat(picture)["messages"]
    chat["messages"][2]["text"] = "What is it?"
    assert store.save(chat)["title"] == "What is it? · 📎 red.png"
