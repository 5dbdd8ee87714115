"""Filesystem detection from mountinfo fixtures, and the journal mode it leads to (rule 8)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest

from sessiondb.errors import InvalidInput
from sessiondb.sqlite import fsdetect
from sessiondb.sqlite.fsdetect import (
    NetworkFilesystemWarning,
    choose_journal_mode,
    decode_mountinfo_field,
    filesystem_type,
    parse_mountinfo,
    warn_once,
)


def _line(n: int, mount_point: str, fs_type: str, source: str = "src", optional: str = "") -> str:
    """One mountinfo line as proc(5) documents it; the mount point must already be escaped."""
    opt = f" {optional}" if optional else ""
    return f"{n} 1 0:{n} / {mount_point} rw,relatime{opt} - {fs_type} {source} rw"


def _escape(path: str) -> str:
    return (
        path.replace("\\", "\\134")
        .replace(" ", "\\040")
        .replace("\t", "\\011")
        .replace("\n", "\\012")
    )


LOCAL = ["ext4", "xfs", "btrfs", "tmpfs", "overlay", "zfs", "f2fs"]
REMOTE = ["nfs", "nfs4", "cifs", "smb3", "9p", "virtiofs", "fuse.sshfs", "fuse", "fuseblk"]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path.resolve()


def _mountinfo(root: Path, mounts: dict[str, str]) -> str:
    lines = [_line(1, "/", "ext4", "/dev/vda", "shared:1")]
    for i, (name, fs) in enumerate(mounts.items(), start=2):
        lines.append(_line(i, _escape(str(root / name)), fs))
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("fs", LOCAL)
def test_local_filesystems_get_wal(root: Path, fs: str) -> None:
    info = _mountinfo(root, {"m": fs})
    db = root / "m" / "state.db"
    assert filesystem_type(db, info) == fs
    assert choose_journal_mode(db, mountinfo=info) == ("wal", None)


@pytest.mark.parametrize("fs", REMOTE)
def test_network_and_vm_mounts_get_rollback_journal_with_warning(root: Path, fs: str) -> None:
    info = _mountinfo(root, {"m": fs})
    db = root / "m" / "state.db"
    mode, warning = choose_journal_mode(db, mountinfo=info)
    assert mode == "delete"
    assert warning is not None
    assert fs in warning and str(db) in warning
    assert "WAL" in warning and "\n" not in warning


def test_longest_prefix_wins_over_root(root: Path) -> None:
    info = _mountinfo(root, {"nfs": "nfs4", "nfs/inner": "ext4"})
    assert filesystem_type(root / "nfs" / "a.db", info) == "nfs4"
    assert filesystem_type(root / "nfs" / "inner" / "a.db", info) == "ext4"
    assert filesystem_type(root / "elsewhere.db", info) == "ext4"  # only "/" matches
    assert filesystem_type("/definitely/not/mounted/x.db", info) == "ext4"


def test_prefix_is_matched_by_whole_components(root: Path) -> None:
    info = _mountinfo(root, {"nfs": "nfs"})
    assert filesystem_type(root / "nfsdata" / "a.db", info) == "ext4"
    assert filesystem_type(root / "nfs", info) == "nfs"


def test_mount_point_with_space_and_octal_escapes(root: Path) -> None:
    info = _mountinfo(root, {"my share": "cifs", "tab\tdir": "9p", "back\\slash": "nfs"})
    assert "\\040" in info  # the fixture really is escaped the way the kernel does it
    assert filesystem_type(root / "my share" / "s.db", info) == "cifs"
    assert filesystem_type(root / "tab\tdir" / "s.db", info) == "9p"
    assert filesystem_type(root / "back\\slash" / "s.db", info) == "nfs"
    assert filesystem_type(root / "my" / "s.db", info) == "ext4"


def test_decode_octal_escapes() -> None:
    assert decode_mountinfo_field(r"/mnt/a\040b\011c\012d\134e") == "/mnt/a b\tc\nd\\e"
    assert decode_mountinfo_field("/plain") == "/plain"


def test_optional_fields_and_fuse_subtype_are_parsed() -> None:
    text = "40 27 0:50 / /mnt/remote rw,nosuid shared:5 master:2 - fuse.sshfs me@host:/x rw\n"
    (mount,) = parse_mountinfo(text)
    assert mount.mount_point == "/mnt/remote"
    assert mount.fs_type == "fuse.sshfs"
    assert mount.source == "me@host:/x"


def test_malformed_lines_are_skipped() -> None:
    assert parse_mountinfo("garbage\n\n1 2 3\n") == []


def test_symlink_is_resolved_to_the_mount_it_points_into(root: Path) -> None:
    (root / "nfs").mkdir()
    (root / "link").symlink_to(root / "nfs")
    info = _mountinfo(root, {"nfs": "nfs4"})
    assert filesystem_type(root / "link" / "new.db", info) == "nfs4"
    assert choose_journal_mode(root / "link" / "new.db", mountinfo=info)[0] == "delete"


def test_symlinked_file_on_local_disk_pointing_to_network_mount(root: Path) -> None:
    (root / "nfs").mkdir()
    (root / "nfs" / "real.db").write_bytes(b"")
    (root / "local.db").symlink_to(root / "nfs" / "real.db")
    info = _mountinfo(root, {"nfs": "nfs"})
    assert filesystem_type(root / "local.db", info) == "nfs"


def test_last_of_several_mounts_on_one_point_is_on_top(root: Path) -> None:
    info = _mountinfo(root, {"m": "ext4"}) + _line(9, _escape(str(root / "m")), "virtiofs")
    assert filesystem_type(root / "m" / "a.db", info) == "virtiofs"


def test_relative_path_is_resolved_against_cwd(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (root / "nfs").mkdir()
    monkeypatch.chdir(root / "nfs")
    info = _mountinfo(root, {"nfs": "nfs4"})
    assert filesystem_type("state.db", info) == "nfs4"


def test_explicit_journal_mode_overrides_detection(root: Path) -> None:
    info = _mountinfo(root, {"nfs": "nfs4", "disk": "ext4"})
    assert choose_journal_mode(root / "nfs" / "a.db", "wal", info) == ("wal", None)
    assert choose_journal_mode(root / "disk" / "a.db", "delete", info) == ("delete", None)
    assert choose_journal_mode(root / "disk" / "a.db", "DELETE", info) == ("delete", None)


def test_invalid_journal_mode_is_invalid_input(root: Path) -> None:
    with pytest.raises(InvalidInput, match="journal_mode"):
        choose_journal_mode(root / "a.db", "off")


def test_unknown_filesystem_when_mountinfo_is_missing(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fsdetect, "MOUNTINFO", str(root / "no-such-mountinfo"))
    assert filesystem_type(root / "a.db") is None
    assert choose_journal_mode(root / "a.db") == ("wal", None)


@pytest.mark.skipif(not os.path.exists("/proc/self/mountinfo"), reason="needs Linux /proc")
def test_real_mountinfo_names_a_filesystem(root: Path) -> None:
    assert filesystem_type(root / "x.db") not in (None, "")


def test_warning_is_emitted_once_per_process_per_file(root: Path) -> None:
    fsdetect._reset_warned_for_tests()
    a, b = root / "a.db", root / "b.db"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert warn_once(a, "first") is True
        assert warn_once(a, "again") is False
        assert warn_once(root / "." / "a.db", "same file, other spelling") is False
        assert warn_once(b, "other file") is True
    assert [str(w.message) for w in caught] == ["first", "other file"]
    assert all(issubclass(w.category, NetworkFilesystemWarning) for w in caught)


def test_warning_category_can_be_filtered(root: Path) -> None:
    fsdetect._reset_warned_for_tests()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.simplefilter("ignore", NetworkFilesystemWarning)
        warn_once(root / "c.db", "silenced")
    assert caught == []
