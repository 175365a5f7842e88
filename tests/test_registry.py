"""The adapters folder: names, listing, problems, import/export, rename, delete."""

import json
import zipfile

import pytest

from vlmchat.lora import store as registry
from vlmchat.errors import InputError, VlmchatError


def make_adapter(folder, name, base="demo", architecture="LlavaForConditionalGeneration", weights=True):
    path = folder / name
    path.mkdir(parents=True)
    (path / registry.CONFIG_FILE).write_text(json.dumps({"peft_type": "LORA", "r": 8,
                                                         "base_model_name_or_path": "models/vlmchat-demo"}))
    if weights:  # a whole safetensors file of one 2x2 float32 tensor (random values: what is read is the layout)
        header = json.dumps({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}).encode()
        (path / registry.WEIGHTS_FILE).write_bytes(len(header).to_bytes(8, "little") + header + bytes(16))
    registry.write_metadata(path, {"base_model": base, "architecture": architecture, "notes": "n"})
    return path


@pytest.mark.parametrize("name", ["", "  "])
def test_an_empty_name_is_asked_for(name):
    with pytest.raises(InputError, match="Give the adapter a name: 1-64 letters"):  # it was "'' is not a valid..."
        registry.validate_adapter_name(name)


@pytest.mark.parametrize("name", ["../evil", "a/b", "a\\b", ".hidden", "base", "CON", "x" * 65, "bad name",
                                  "trailing."])
def test_bad_names_are_refused(name):
    with pytest.raises(InputError, match="not a valid adapter name"):
        registry.validate_adapter_name(name)


def test_listing_reports_what_is_wrong(tmp_path):
    make_adapter(tmp_path, "good")
    (tmp_path / "empty").mkdir()
    pickle = make_adapter(tmp_path, "pickle", weights=False)
    (pickle / "adapter_model.bin").write_bytes(b"x")
    bad_json = make_adapter(tmp_path, "badjson")
    (bad_json / registry.CONFIG_FILE).write_text("{nope")
    (tmp_path / ".partial.tmp").mkdir()
    found = {a.name: a.problem for a in registry.list_adapters(tmp_path)}
    assert set(found) == {"good", "empty", "pickle", "badjson"}
    assert found["good"] == ""
    assert "not a PEFT adapter folder" in found["empty"]
    assert "pickle" in found["pickle"] and "safetensors" in found["pickle"]
    assert "adapter_config.json is not readable JSON" in found["badjson"]


def test_a_weights_file_cut_short_is_a_broken_adapter_and_is_not_imported(tmp_path):
    """A copy or download that stopped early: its header names more bytes than the file holds."""
    cut = make_adapter(tmp_path / "elsewhere", "cut")
    weights = cut / registry.WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[:-4])
    assert "is cut short" in registry.read_adapter(cut).problem
    with pytest.raises(InputError, match="cut short"):
        registry.import_folder(cut, tmp_path / "adapters")
    assert not (tmp_path / "adapters" / "cut").exists()


def test_incompatible_adapters_say_why(tmp_path):
    good = registry.read_adapter(make_adapter(tmp_path, "good"))
    other_arch = registry.read_adapter(make_adapter(tmp_path, "qwen", architecture="Qwen2VLForConditionalGeneration"))
    other_base = registry.read_adapter(make_adapter(tmp_path, "smol", base="HuggingFaceTB/SmolVLM-256M-Instruct",
                                                    architecture=""))
    loaded = ("demo", "/x/models/vlmchat-demo", "LlavaForConditionalGeneration")
    assert registry.incompatibility(good, *loaded) == ""
    assert "made for Qwen2VLForConditionalGeneration" in registry.incompatibility(other_arch, *loaded)
    assert "trained on HuggingFaceTB/SmolVLM-256M-Instruct" in registry.incompatibility(other_base, *loaded)


def test_import_export_roundtrip_and_no_overwrite(tmp_path):
    source = make_adapter(tmp_path / "elsewhere", "mine")
    folder = tmp_path / "adapters"
    assert registry.import_folder(source, folder).name == "mine"
    with pytest.raises(InputError, match="already exists"):
        registry.import_folder(source, folder)
    meta_file = folder / "mine" / registry.META_FILE
    meta = json.loads(meta_file.read_text())
    trained_on = {"name": "photos", "format": "imagefolder", "size": 60, "path": str(tmp_path / "home" / "photos")}
    meta_file.write_text(json.dumps({**meta, "dataset": trained_on}))
    archive = registry.export_zip(folder, "mine", tmp_path / "out")
    imported = registry.import_zip(archive, folder, "copy")
    assert imported.problem == "" and imported.notes == "n"
    # The trainer's folder stays home (it named the computer's folders to whoever downloaded the zip).
    assert imported.dataset == {"name": "photos", "format": "imagefolder", "size": 60}
    assert str(tmp_path) not in zipfile.ZipFile(archive).read(f"mine/{registry.META_FILE}").decode()
    assert not list(folder.glob(".*"))  # no staging folders left behind


def test_zip_members_cannot_escape(tmp_path):
    source = make_adapter(tmp_path / "src", "x")
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.write(source / registry.CONFIG_FILE, "../../" + registry.CONFIG_FILE)
        zipped.write(source / registry.WEIGHTS_FILE, "/abs/" + registry.WEIGHTS_FILE)
        zipped.writestr("../../outside.txt", "escape")
    folder = tmp_path / "adapters"
    # refused as every other upload refuses it (it was flattened and imported, unlike a caption or dataset zip)
    with pytest.raises(InputError, match="holds an unsafe member '../../adapter_config.json'"):
        registry.import_zip(archive, folder, "safe")
    assert not (folder / "safe").exists()
    assert not (tmp_path / "outside.txt").exists() and not list(tmp_path.parent.glob("outside.txt"))


def test_not_a_zip_and_not_an_adapter(tmp_path):
    bogus = tmp_path / "a.zip"
    bogus.write_text("no")
    with pytest.raises(InputError, match="not a valid zip"):
        registry.import_zip(bogus, tmp_path / "adapters")
    (tmp_path / "plain").mkdir()
    with pytest.raises(InputError, match="not a usable adapter"):
        registry.import_folder(tmp_path / "plain", tmp_path / "adapters")


def test_rename_and_delete_need_care(tmp_path):
    make_adapter(tmp_path, "a")
    make_adapter(tmp_path, "b")
    with pytest.raises(InputError, match="already exists"):
        registry.rename_adapter(tmp_path, "a", "b")
    registry.rename_adapter(tmp_path, "a", "c")
    with pytest.raises(InputError, match="type its name exactly"):
        registry.delete_adapter(tmp_path, "c", "yes")
    registry.delete_adapter(tmp_path, "c", "c")
    assert [a.name for a in registry.list_adapters(tmp_path)] == ["b"]


def _zip_of(path, folder, *, member=lambda name: name):
    import zipfile

    with zipfile.ZipFile(path, "w") as zipped:
        for item in sorted(folder.iterdir()):
            zipped.write(item, member(item.name))
    return path


def test_a_zip_import_says_what_is_wrong_with_the_zip(tmp_path):
    """A zip's problems read "That folder is not a usable adapter", the pickle weights of a zip were not named (a
    folder's were), and a broken JSON file was not named (blind tester)."""
    pickle = make_adapter(tmp_path / "made", "pickle", weights=False)
    (pickle / "adapter_model.bin").write_bytes(b"x")
    with pytest.raises(InputError, match=r"'pickle.zip' is not a usable adapter: weights are a pickle .bin file"):
        registry.import_zip(_zip_of(tmp_path / "pickle.zip", pickle), tmp_path / "adapters")
    (make_adapter(tmp_path / "made", "broken") / registry.META_FILE).write_text("{nope")
    with pytest.raises(InputError, match=r"'broken.zip' is not a usable adapter: vlmchat.json is not readable JSON"):
        registry.import_zip(_zip_of(tmp_path / "broken.zip", tmp_path / "made" / "broken"), tmp_path / "adapters")
    with pytest.raises(VlmchatError, match=r"'~/x' is not a hub id; hub ids look like 'owner/name'"):
        registry.import_from_hub("~/x", tmp_path / "adapters")  # it reached the hub library: "HFValidationError"


def test_a_plain_peft_adapter_names_its_base_class_from_its_config(tmp_path):
    """PEFT writes the base model's class into adapter_config.json: an adapter for another architecture without a
    vlmchat.json said only which folder it was trained on."""
    path = tmp_path / "other"
    path.mkdir()
    (path / registry.CONFIG_FILE).write_text(json.dumps({
        "peft_type": "LORA", "r": 4, "base_model_name_or_path": "made/tiny-idefics3",
        "auto_mapping": {"base_model_class": "Idefics3ForConditionalGeneration", "parent_library": "x"}}))
    header = json.dumps({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}).encode()
    (path / registry.WEIGHTS_FILE).write_bytes(len(header).to_bytes(8, "little") + header + bytes(16))
    adapter = registry.read_adapter(path)
    loaded = ("demo", "/x/models/vlmchat-demo", "LlavaForConditionalGeneration")
    assert registry.incompatibility(adapter, *loaded) == ("made for Idefics3ForConditionalGeneration; the loaded "
                                                          "model is LlavaForConditionalGeneration")


def test_compare_opens_on_base_and_the_newest_adapter_not_the_first_by_name(tmp_path, demo_model_path):
    """Compare's right side was the first adapter by name: after training 'mine' it still showed demo-es."""
    import shutil

    from conftest import write_settings
    from vlmchat.models.manager import ModelManager
    from vlmchat.settings import load_settings
    from vlmchat.ui.adapters_tab import compare_sides

    manager = ModelManager(load_settings(write_settings(tmp_path)))
    manager.load()
    adapters = tmp_path / "adapters"
    for name, created in (("aaa-new", "2026-12-03T23:00:00+00:00"), ("zzz-old", "2026-12-03T23:30:00+05:00")):
        shutil.copytree(adapters / "demo-es", adapters / name)
        meta = json.loads((adapters / name / "vlmchat.json").read_text()) | {"created": created}
        (adapters / name / "vlmchat.json").write_text(json.dumps(meta))
    sides, right = compare_sides(manager)
    assert sides[:1] == ["base"] and {"aaa-new", "demo-es", "zzz-old"} <= set(sides)
    assert right == "aaa-new"  # zzz-old's 23:30+05:00 is 18:30 UTC: older, though later as a string


@pytest.mark.parametrize("file, text, said", [
    (registry.META_FILE, "null", "vlmchat.json is not a JSON object"),
    (registry.CONFIG_FILE, "[1, 2, 3]", "adapter_config.json is not a JSON object"),
    (registry.CONFIG_FILE, '{"peft_type": "LORA", "r": 8, "auto_mapping": [1]}', "auto_mapping is not a JSON object"),
])
def test_an_adapter_whose_json_is_no_object_is_disabled_not_the_whole_list(tmp_path, file, text, said):
    """vlmchat.json of `null` broke /list_adapters, the Adapters tab and `caption --adapter typo` with "'NoneType'
    object has no attribute 'get'" (blind tester)."""
    make_adapter(tmp_path / "adapters", "good")
    bad = make_adapter(tmp_path / "elsewhere", "bad")
    (bad / file).write_text(text)
    (tmp_path / "bad.zip").write_bytes(b"")
    with zipfile.ZipFile(tmp_path / "bad.zip", "w") as zipped:
        for item in bad.iterdir():
            zipped.write(item, f"bad/{item.name}")
    import shutil

    shutil.copytree(bad, tmp_path / "adapters" / "bad")
    found = {a.name: a.problem for a in registry.list_adapters(tmp_path / "adapters")}
    assert found["good"] == "" and said in found["bad"] and "re-export or re-import" in found["bad"]
    with pytest.raises(InputError, match="choose one of: bad, good"):
        registry.find_adapter(tmp_path / "adapters", "typo")
    with pytest.raises(InputError, match=said):
        registry.import_zip(tmp_path / "bad.zip", tmp_path / "adapters", name="other")
    with pytest.raises(InputError, match=f"Adapter 'bad' cannot be used: .*{said}") as refused:
        registry.usable_adapter(tmp_path / "adapters", "bad", "demo", "models/vlmchat-demo", "")
    assert "load the model it was made for" not in str(refused.value)  # the files are damaged, not the model


def test_a_folder_whose_name_is_no_adapter_name_is_listed_as_disabled(tmp_path):
    """adapters/ñandú es/ was listed as usable; activating, renaming or deleting it said "not a valid adapter name"."""
    make_adapter(tmp_path, "ñandú es")
    (listed,) = registry.list_adapters(tmp_path)
    assert listed.problem == ("the folder's name is not a valid adapter name: rename the folder to e.g. 'nandu-es' "
                              "on disk")
    registry.validate_adapter_name("nandu-es")


def test_a_rank_that_does_not_fit_the_weights_is_said_in_one_sentence(tmp_path):
    """adapter_config.json's r = 16 over rank-4 weights loaded into a truncated "size mismatch for base_model.model..."
    dump (blind tester)."""
    path = make_adapter(tmp_path, "ranks")
    header = json.dumps({"base_model.model.layers.0.q_proj.lora_A.weight":
                         {"dtype": "F32", "shape": [4, 1], "data_offsets": [0, 16]}}).encode()
    (path / registry.WEIGHTS_FILE).write_bytes(len(header).to_bytes(8, "little") + header + bytes(16))
    assert registry.read_adapter(path).problem == (
        "adapter_config.json says r = 8 but the weights are rank 4 (q_proj's lora_A is 4 x 1): the two files do not "
        "belong together; re-export or re-import the adapter")
