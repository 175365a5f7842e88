"""Safe file operations: atomic writes, the staged-folder swap, the checked unzip."""

import io
import stat
import struct
import zipfile
from pathlib import Path

import pytest

from vlmchat import files
from vlmchat.errors import InputError
from vlmchat.files import (extract_zip_checked, staged_folder, write_bytes_atomic, write_text_atomic,
                           write_zip_atomic)

MIB = 2**20


def leftovers(folder):
    """Hidden entries (staging, trash, temp files) in `folder`."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def make_folder(path, **contents):
    path.mkdir(parents=True)
    for name, text in contents.items():
        (path / name).write_text(text)
    return path


# ---------------------------------------------------------------- atomic writes

def test_bytes_are_written_and_kept_unless_overwrite(tmp_path):
    target = tmp_path / "sub" / "data.bin"
    assert write_bytes_atomic(target, b"one", overwrite=False) and target.read_bytes() == b"one"
    assert not write_bytes_atomic(target, b"two", overwrite=False) and target.read_bytes() == b"one"
    assert write_text_atomic(target, "three\n") and target.read_bytes() == b"three\n"
    assert leftovers(target.parent) == []


def test_a_zip_is_written_from_files_and_bytes(tmp_path):
    source = tmp_path / "a.txt"
    source.write_text("from a file")
    target = write_zip_atomic(tmp_path / "out" / "set.zip", [("dir/a.txt", source), ("b.txt", b"from bytes")])
    with zipfile.ZipFile(target) as zipped:
        assert zipped.read("dir/a.txt") == b"from a file" and zipped.read("b.txt") == b"from bytes"
        assert zipped.getinfo("b.txt").compress_type == zipfile.ZIP_DEFLATED
    assert leftovers(target.parent) == []


def test_a_zip_that_fails_halfway_leaves_the_old_one(tmp_path):
    target = write_zip_atomic(tmp_path / "set.zip", [("old.txt", b"old")])

    def members():
        yield "new.txt", b"new"
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_zip_atomic(target, members())
    with zipfile.ZipFile(target) as zipped:
        assert zipped.namelist() == ["old.txt"]
    assert leftovers(tmp_path) == []


# ---------------------------------------------------------------- staged folders

def test_a_new_folder_appears_only_when_the_block_succeeds(tmp_path):
    target = tmp_path / "parent" / "model"
    with staged_folder(target) as staging:
        assert staging.parent == target.parent and staging.name.startswith(".") and not target.exists()
        (staging / "weights").write_text("w")
    assert (target / "weights").read_text() == "w" and leftovers(target.parent) == []


def test_replace_swaps_in_the_new_folder(tmp_path):
    target = make_folder(tmp_path / "model", old="1", shared="old")
    with staged_folder(target, replace=True) as staging:
        (staging / "shared").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["shared"] and (target / "shared").read_text() == "new"
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("replace", [False, True])
def test_a_failing_block_leaves_the_target_as_it_was(tmp_path, replace):
    existing = make_folder(tmp_path / "model", old="1") if replace else None
    with pytest.raises(RuntimeError, match="boom"):
        with staged_folder(tmp_path / "model", replace=replace) as staging:
            (staging / "half").write_text("x")
            raise RuntimeError("boom")
    if existing:
        assert [p.name for p in existing.iterdir()] == ["old"]
    else:
        assert not (tmp_path / "model").exists()
    assert leftovers(tmp_path) == []


def test_a_failed_rename_puts_the_old_folder_back(tmp_path, monkeypatch):
    target = make_folder(tmp_path / "model", old="1")
    real_rename = files.os.rename

    def rename(source, destination):
        if str(destination) == str(target) and str(source).endswith(".tmp"):  # swapping the new folder in
            raise OSError("rename failed")
        real_rename(source, destination)

    monkeypatch.setattr(files.os, "rename", rename)
    with pytest.raises(OSError, match="rename failed"):
        with staged_folder(target, replace=True) as staging:
            (staging / "new").write_text("2")
    assert [p.name for p in target.iterdir()] == ["old"] and leftovers(tmp_path) == []


def test_an_existing_target_is_refused_unless_replacing(tmp_path):
    target = make_folder(tmp_path / "model", old="1")
    ran = []
    with pytest.raises(FileExistsError):
        with staged_folder(target):
            ran.append(True)
    assert not ran and [p.name for p in target.iterdir()] == ["old"] and leftovers(tmp_path) == []


def test_a_target_that_appears_meanwhile_is_not_replaced(tmp_path):
    target = tmp_path / "model"
    with pytest.raises(FileExistsError):
        with staged_folder(target) as staging:
            (staging / "mine").write_text("x")
            make_folder(target, theirs="y")
    assert [p.name for p in target.iterdir()] == ["theirs"] and leftovers(tmp_path) == []


# ---------------------------------------------------------------- checked unzip

def write_zip(path, *members):
    """A zip of (name, data) or (ZipInfo, data) members, written as given (no name clean-up)."""
    with zipfile.ZipFile(path, "w") as zipped:
        for name, data in members:
            zipped.writestr(name, data)
    return path


def special(name, mode):
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = mode << 16
    return info


def patch_central(path, field_offset, fmt, value):
    """Overwrite one field of the first central directory record (what zipfile trusts)."""
    data = bytearray(path.read_bytes())
    start = data.index(b"PK\x01\x02")
    struct.pack_into(fmt, data, start + field_offset, value)
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("member, problem", [
    ("../evil.txt", "'..'"), ("a/../../evil.txt", "'..'"), ("a\\..\\..\\evil.txt", "'..'"),
    ("/tmp/evil.txt", "absolute path"), ("\\evil.txt", "absolute path"), ("C:/evil.txt", "drive"),
    (special("link.txt", stat.S_IFLNK | 0o777), "symbolic link"),
    (special("tty", stat.S_IFCHR | 0o644), "device"), (special("pipe", stat.S_IFIFO | 0o644), "device"),
    ("good.txt", "both be written as"), ("good.txt/inner.txt", "both as a file and as the folder"),
])
@pytest.mark.filterwarnings("ignore:Duplicate name")
def test_every_bad_member_kind_is_refused_with_nothing_extracted(tmp_path, member, problem):
    archive = write_zip(tmp_path / "bad.zip", ("good.txt", b"fine"), ("dir/also.txt", b"fine"), (member, b"/etc"))
    dest = tmp_path / "out" / "dest"
    with pytest.raises(InputError, match="nothing was extracted") as refused:
        extract_zip_checked(archive, dest, MIB, 100)
    name = member.filename if isinstance(member, zipfile.ZipInfo) else member
    assert problem in str(refused.value) and f"'{name}'" in str(refused.value)
    assert not dest.exists() and not list(tmp_path.rglob("evil.txt"))


def test_a_password_protected_member_is_refused(tmp_path):
    archive = patch_central(write_zip(tmp_path / "locked.zip", ("secret.txt", b"x")), 8, "<H", 0x1)
    with pytest.raises(InputError, match="'secret.txt' that is password-protected"):
        extract_zip_checked(archive, tmp_path / "out", MIB, 100)
    assert not (tmp_path / "out").exists()


def test_the_file_count_cap(tmp_path):
    archive = write_zip(tmp_path / "many.zip", *[(f"{i}.txt", b"x") for i in range(4)])
    with pytest.raises(InputError, match="holds 4 files, over the limit of 3; send fewer"):
        extract_zip_checked(archive, tmp_path / "out", MIB, 3, advice="send fewer")
    assert not (tmp_path / "out").exists()
    assert len(extract_zip_checked(archive, tmp_path / "out", MIB, 4)) == 4


def test_the_declared_size_cap_counts_every_member(tmp_path):
    archive = write_zip(tmp_path / "big.zip", ("keep.txt", b"x" * 600), ("skip.bin", b"x" * 600))
    keep_one = lambda name: name if name == "keep.txt" else None  # noqa: E731
    with pytest.raises(InputError, match="unpacks to 1.2 KiB, over the 1.0 KiB limit; try less"):
        extract_zip_checked(archive, tmp_path / "out", 1024, 100, place=keep_one, advice="try less")
    assert not (tmp_path / "out").exists()


def test_a_picture_over_its_limit_is_refused_before_anything_is_unpacked(tmp_path):
    """A 2 MB zip of one 2 GiB picture was unpacked whole before the picture's limit refused it, and stayed on disk
    (blind tester). Other members may be larger: a dataset file is not a picture."""
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zipped:
        zipped.writestr("rows.jsonl", b"x" * (3 * MIB))
        zipped.writestr("pictures/zeros.PNG", b"\0" * (3 * MIB))
    with pytest.raises(InputError, match=r"holds the picture 'pictures/zeros.PNG' of 3.0 MiB, over the 2.0 MiB limit "
                                         r"for a picture, so nothing was extracted; resize it"):
        extract_zip_checked(archive, tmp_path / "out", 100 * MIB, 10, max_picture_bytes=2 * MIB)
    assert not (tmp_path / "out").exists()
    assert len(extract_zip_checked(archive, tmp_path / "out", 100 * MIB, 10, max_picture_bytes=4 * MIB)) == 2


def test_a_header_that_understates_the_size_cannot_get_past_the_cap(tmp_path):
    archive = tmp_path / "forged.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zipped:
        zipped.writestr("first.txt", b"ok")
        zipped.writestr("bomb.bin", b"\0" * MIB)
    data = bytearray(archive.read_bytes())
    second = data.index(b"PK\x01\x02", data.index(b"PK\x01\x02") + 1)
    struct.pack_into("<I", data, second + 24, 10)  # bomb.bin now claims 10 bytes
    archive.write_bytes(bytes(data))
    with pytest.raises(InputError, match="damaged"):
        extract_zip_checked(archive, tmp_path / "out", 1024, 100)
    assert not [p for p in (tmp_path / "out").rglob("*") if p.is_file()]


def test_a_stream_longer_than_its_header_is_cut_off(tmp_path, monkeypatch):
    archive = write_zip(tmp_path / "set.zip", ("a.txt", b"0123456789"))
    monkeypatch.setattr(zipfile.ZipFile, "open", lambda self, info: io.BytesIO(b"x" * (3 * MIB)))
    with pytest.raises(InputError, match="'a.txt' holds more than its header says"):
        extract_zip_checked(archive, tmp_path / "out", 4 * MIB, 100)
    assert not (tmp_path / "out" / "a.txt").exists()


def test_a_good_archive_is_extracted_where_place_says(tmp_path):
    archive = write_zip(tmp_path / "good.zip", ("top.txt", b"1"), ("sub/", b""), ("sub\\inner.txt", b"2"),
                        ("deep/a/b.txt", b"3"), ("ignored.txt", b"left out"))
    dest = tmp_path / "out"
    placed = {"top.txt": "top.txt", "sub/inner.txt": "renamed/inner.txt", "deep/a/b.txt": "deep/a/b.txt"}
    written = extract_zip_checked(archive, dest, MIB, 100, place=placed.get)
    assert written == [dest / "top.txt", dest / "renamed" / "inner.txt", dest / "deep" / "a" / "b.txt"]
    assert [p.read_bytes() for p in written] == [b"1", b"2", b"3"]
    assert not (dest / "ignored.txt").exists()
    # a member left out is still refused when it is unsafe: one policy for every upload (an adapter zip flattened
    # '../../x/adapter_config.json' and imported it, where Caption and Fine-tune refused such a zip)
    escaping = write_zip(tmp_path / "escaping.zip", ("top.txt", b"1"), ("../ignored.txt", b"left out"))
    with pytest.raises(InputError, match="holds an unsafe member '../ignored.txt'"):
        extract_zip_checked(escaping, tmp_path / "out2", MIB, 100, place=placed.get)


def test_everything_is_extracted_by_default(tmp_path):
    archive = write_zip(tmp_path / "good.zip", ("top.txt", b"1"), ("sub/inner.txt", b"2"))
    written = extract_zip_checked(archive, tmp_path / "out", MIB, 100)
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in written) == ["sub/inner.txt", "top.txt"]


def test_utf8_names_stored_without_the_utf8_flag_keep_their_letters(tmp_path):
    """Linux's `zip` (Info-ZIP 3.0) stores UTF-8 names without the UTF-8 flag; zipfile reads them as cp437, so
    'ñandú-青い四角.png' was unpacked as '├▒and├║-Θ¥Æπüäσ¢¢ΦºÆ.png' and its caption matched no picture (caption
    reviewer). The zip here is Python's with that flag cleared, byte for byte what Info-ZIP writes for the name."""
    archive = write_zip(tmp_path / "set.zip", ("ñandú-青い四角.png", b"1"), ("plain.txt", b"2"))
    data = bytearray(archive.read_bytes())
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):  # local and central headers' flag bits
        at = data.find(signature)
        while at != -1:
            flags = struct.unpack_from("<H", data, at + offset)[0]
            struct.pack_into("<H", data, at + offset, flags & ~0x800)
            at = data.find(signature, at + 4)
    archive.write_bytes(bytes(data))
    with zipfile.ZipFile(archive) as zipped:
        assert "ñandú-青い四角.png" not in zipped.namelist()  # zipfile alone misreads it
    written = extract_zip_checked(archive, tmp_path / "out", MIB, 100)
    assert sorted(p.name for p in written) == ["plain.txt", "ñandú-青い四角.png"]


def test_not_a_zip(tmp_path):
    bogus = tmp_path / "a.zip"
    bogus.write_text("no")
    with pytest.raises(InputError, match="'a.zip' is not a valid zip file"):
        extract_zip_checked(bogus, tmp_path / "out", MIB, 100)


def test_a_writable_file_is_checked_by_trying_and_left_as_it_was(tmp_path):
    """os.access says yes to root everywhere; the check now tries: /proc takes no new file, an existing file keeps
    its bytes and no stray file is left beside it."""
    kept = tmp_path / "results.csv"
    kept.write_text("old rows\n")
    files.check_writable_file(kept, "results.csv")
    files.check_writable_file(tmp_path / "new" / "results.csv", "results.csv")
    assert kept.read_text() == "old rows\n" and sorted(p.name for p in tmp_path.rglob("*")) == ["new", "results.csv"]
    with pytest.raises(InputError, match=r"/proc/vlmchat-x\.csv cannot be written there \(.+\); choose another place"):
        files.check_writable_file(Path("/proc/vlmchat-x.csv"), "results.csv")
