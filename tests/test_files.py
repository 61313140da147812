"""gpunn/files.py, the one way gpunn writes a file: its own output of the same kind is replaced,
anything else only when forced, a file the command reads never; new files get the user's umask;
a failed write leaves the old file and nothing else; every OS error is one line naming the path,
never the temporary file. The writers (Model.save, checkpoint.save, gpunn predict, export,
train) are tested beside them, in test_io, test_checkpoint, test_cli and test_export."""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path

import pytest

import gpunn as gn
from gpunn import files

KIND = "notes"


def _identify(path: Path) -> str | None:
    """A toy format: gpunn's notes start with "notes:", its memos with "memo:"."""
    start = path.read_bytes()[:6]
    return KIND if start.startswith(b"notes:") else "memo" if start.startswith(b"memo:") else None


def _write(path, text=b"notes: new", **options):
    return files.write(path, KIND, _identify, lambda file: file.write(text), **options)


def _names(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


def _one_line(error: BaseException, path: Path) -> str:
    text = str(error)
    assert "\n" not in text and str(path) in text and "[Errno" not in text, text
    assert ".tmp" not in text, text  # the temporary file's name never reaches the user
    return text


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")
@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_a_new_file_gets_the_users_umask(tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        path = _write(tmp_path / "a.notes")
    finally:
        os.umask(previous)
    assert path.stat().st_mode & 0o777 == mode
    assert path.read_bytes() == b"notes: new"


def test_its_own_output_of_the_same_kind_is_replaced(tmp_path):
    path = tmp_path / "a.notes"
    path.write_bytes(b"notes: old")
    assert _write(path) == path and path.read_bytes() == b"notes: new"
    assert _names(tmp_path) == ["a.notes"]


@pytest.mark.parametrize("content, says", [
    (b"the user's own data", "it is not one of gpunn's notes files"),
    (b"memo: gpunn's, of another kind", "it is a gpunn memo file, not a notes file"),
])
def test_anything_else_is_replaced_only_with_force(tmp_path, content, says):
    path = tmp_path / "a.notes"
    path.write_bytes(content)
    with pytest.raises(gn.OverwriteRefusedError) as caught:
        _write(path)
    text = _one_line(caught.value, path)
    assert says in text and text.endswith("Give another path, or force=True to replace it.")
    assert path.read_bytes() == content and _names(tmp_path) == ["a.notes"]
    with pytest.raises(gn.OverwriteRefusedError, match="or --force to replace it"):
        files.check(path, KIND, _identify, force_hint="--force")
    _write(path, force=True)
    assert path.read_bytes() == b"notes: new"


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")
def test_a_read_only_file_is_replaced_only_with_force(tmp_path):
    path = tmp_path / "a.notes"
    path.write_bytes(b"notes: kept")
    path.chmod(0o444)
    with pytest.raises(gn.OverwriteRefusedError, match="it is read-only"):
        _write(path)
    assert path.read_bytes() == b"notes: kept"
    _write(path, force=True)
    assert path.read_bytes() == b"notes: new"


def test_a_file_the_command_reads_is_never_replaced_even_when_forced(tmp_path, monkeypatch):
    source = tmp_path / "a.notes"
    source.write_bytes(b"notes: the input")  # gpunn's own kind: only the input rule refuses it
    (tmp_path / "link.notes").symlink_to(source)
    monkeypatch.chdir(tmp_path)
    for target in (source, Path("a.notes"), Path("./sub/../a.notes"), Path("link.notes")):
        (tmp_path / "sub").mkdir(exist_ok=True)
        with pytest.raises(gn.OverwriteRefusedError) as caught:
            _write(target, force=True, reads={str(source): "the notes"})
        assert "that is the notes this command reads, which gpunn never replaces" in \
            _one_line(caught.value, target)
    assert source.read_bytes() == b"notes: the input"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs a FIFO")
def test_what_is_not_a_regular_file_is_never_replaced(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(gn.OverwriteRefusedError, match="it is not a regular file"):
        _write(fifo, force=True)
    assert _names(tmp_path) == ["pipe"] and not fifo.is_file()


@pytest.mark.parametrize("target, says", [
    ("missing/a.notes", "the folder {tmp}/missing does not exist. Create it, or give a path "
                        "in an existing folder."),
    ("file/a.notes", "{tmp}/file is not a folder"),
    (".", "it is a folder"),
])
def test_a_bad_place_is_one_line_and_writes_nothing(tmp_path, target, says):
    (tmp_path / "file").write_bytes(b"x")
    path = tmp_path / target
    with pytest.raises(gn.FileWriteError) as caught:
        _write(path, force=True)
    assert says.format(tmp=tmp_path) in _one_line(caught.value, path)
    assert _names(tmp_path) == ["file"]


@pytest.mark.parametrize("number, says", [
    (errno.EACCES, "permission denied in the folder {tmp}. Give a path in a folder you can "
                   "write to."),
    (errno.ENOSPC, "No space left on device (the disk is full). Free some space"),
    (errno.EROFS, "the file system is read-only"),
    (errno.EIO, "Input/output error. Check the path and the disk"),
])
def test_an_os_error_is_one_line_without_the_temporary_name(tmp_path, monkeypatch, number,
                                                            says):
    real_open = os.open

    def refuse(name, *args, **kwargs):
        if Path(name).parent == tmp_path:  # as the OS would: its message names the file
            raise OSError(number, os.strerror(number), str(name))
        return real_open(name, *args, **kwargs)

    monkeypatch.setattr(os, "open", refuse)
    path = tmp_path / "a.notes"
    with pytest.raises(gn.FileWriteError) as caught:
        _write(path)
    text = _one_line(caught.value, path)
    assert text.startswith(f"Cannot write the notes to {path}: ")
    assert says.format(tmp=tmp_path) in text
    assert isinstance(caught.value, OSError) and caught.value.errno == number
    assert isinstance(caught.value, gn.GpunnError)


@pytest.mark.parametrize("failure", [OSError("No space left on device"), KeyboardInterrupt()])
def test_a_failed_write_leaves_the_old_file_and_nothing_else(tmp_path, failure):
    path = tmp_path / "a.notes"
    path.write_bytes(b"notes: old")

    def half_then_fail(file):
        file.write(b"notes: half")
        raise failure

    with pytest.raises(type(failure)) as caught:
        files.write(path, KIND, _identify, half_then_fail)
    if isinstance(failure, OSError):
        assert isinstance(caught.value, gn.FileWriteError)
        assert "No space left on device" in _one_line(caught.value, path)
    assert path.read_bytes() == b"notes: old" and _names(tmp_path) == ["a.notes"]


def test_a_failed_rename_leaves_the_old_file_and_nothing_else(tmp_path, monkeypatch):
    path = tmp_path / "a.notes"
    path.write_bytes(b"notes: old")

    def busy(source, target):
        raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), str(source), str(target))

    monkeypatch.setattr(os, "replace", busy)
    with pytest.raises(gn.FileWriteError) as caught:
        _write(path)
    assert os.strerror(errno.EBUSY) in _one_line(caught.value, path)
    assert path.read_bytes() == b"notes: old" and _names(tmp_path) == ["a.notes"]
