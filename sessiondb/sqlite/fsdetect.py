"""Which filesystem holds a database file, and which journal mode that filesystem can carry.

WAL keeps its index in a shared-memory file (``-shm``) that every connection ``mmap``s and locks
with POSIX byte-range locks. On a network or VM mount (NFS, SMB, 9p, virtiofs, FUSE as used by
Docker Desktop and VM shared folders) those pages and locks are not shared between the hosts, so
two sides each believe they own the WAL and the database is corrupted. The rollback journal only
needs whole-file POSIX locks, which those filesystems forward. Rule 8 of docs/design.md.

The filesystem is read from ``/proc/self/mountinfo`` (Linux): the mount whose mount point is the
longest prefix of the resolved path. Where that file does not exist (macOS, Windows) the type is
unknown and WAL is chosen, since such a path is almost always a local disk.

Warnings use :mod:`warnings` with the dedicated category :class:`NetworkFilesystemWarning`, so an
application can silence or escalate exactly this message
(``warnings.simplefilter("ignore", NetworkFilesystemWarning)``) and it is shown even to scripts that
never configure logging. :func:`warn_once` emits it at most once per process per resolved file.
"""

from __future__ import annotations

import os
import re
import threading
import warnings
from dataclasses import dataclass

from ..errors import InvalidInput

MOUNTINFO = "/proc/self/mountinfo"

# Filesystems whose shared memory and locks do not reach every process using the file.
NETWORK_FS_TYPES = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smb2",
        "smbfs",
        "9p",
        "virtiofs",
        "vboxsf",  # VirtualBox shared folders
        "prl_fs",  # Parallels shared folders
        "vmhgfs",  # VMware shared folders (old kernel module)
        "afs",
        "ceph",
        "glusterfs",
        "lustre",
        "gfs2",
        "ocfs2",
        "ncpfs",
        "coda",
        "fuse",
        "fuseblk",
    }
)

JOURNAL_MODES = frozenset({"wal", "delete", "truncate", "persist"})

_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


class NetworkFilesystemWarning(UserWarning):
    """A database lives on a network or VM mount, so sessiondb uses the rollback journal."""


@dataclass(frozen=True)
class Mount:
    mount_point: str
    fs_type: str
    source: str


def decode_mountinfo_field(field: str) -> str:
    """Undo the kernel's octal escapes (``\\040`` space, ``\\011`` tab, ``\\012`` newline,
    ``\\134`` backslash) in a mountinfo field."""
    return _OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


def parse_mountinfo(text: str) -> list[Mount]:
    """Parse mountinfo text (proc(5)); lines that do not have the documented shape are skipped."""
    mounts: list[Mount] = []
    for line in text.splitlines():
        fields = line.split(" ")
        try:
            sep = fields.index("-", 6)  # optional fields (shared:N, master:N…) end at "-"
            mount_point = fields[4]
            fs_type = fields[sep + 1]
            source = fields[sep + 2] if len(fields) > sep + 2 else ""
        except (ValueError, IndexError):
            continue
        mounts.append(
            Mount(
                mount_point=decode_mountinfo_field(mount_point),
                fs_type=decode_mountinfo_field(fs_type),
                source=decode_mountinfo_field(source),
            )
        )
    return mounts


def _read_mountinfo() -> str | None:
    try:
        with open(MOUNTINFO, encoding="utf-8", errors="surrogateescape") as f:
            return f.read()
    except OSError:
        return None


def resolve_for_detection(path: str | os.PathLike[str]) -> str:
    """The absolute path with symlinks resolved; components that do not exist yet (a database
    about to be created) are kept as written under their resolved parent."""
    return os.path.realpath(os.path.abspath(os.fspath(path)))


def _is_under(path: str, mount_point: str) -> bool:
    if mount_point == "/":
        return path.startswith("/")
    return path == mount_point or path.startswith(mount_point.rstrip("/") + "/")


def find_mount(path: str | os.PathLike[str], mountinfo: str | None = None) -> Mount | None:
    """The mount holding ``path``: the longest mount point that is a prefix of the resolved path
    (by whole components). Of several mounts on the same point the last listed is on top."""
    text = _read_mountinfo() if mountinfo is None else mountinfo
    if text is None:
        return None
    resolved = resolve_for_detection(path)
    best: Mount | None = None
    for mount in parse_mountinfo(text):
        if not _is_under(resolved, mount.mount_point):
            continue
        if best is None or len(mount.mount_point) >= len(best.mount_point):
            best = mount
    return best


def filesystem_type(path: str | os.PathLike[str], mountinfo: str | None = None) -> str | None:
    """The filesystem type of the mount holding ``path`` (``ext4``, ``nfs4``, ``fuse.sshfs``…),
    or None when it cannot be known (no /proc)."""
    mount = find_mount(path, mountinfo)
    return mount.fs_type if mount else None


def is_network_fs(fs_type: str | None) -> bool:
    """True for filesystems on which WAL's shared memory is not shared by every user."""
    if fs_type is None:
        return False
    return fs_type in NETWORK_FS_TYPES or fs_type.startswith("fuse.")


def network_warning(path: str | os.PathLike[str], fs_type: str) -> str:
    return (
        f"{os.fspath(path)} is on a {fs_type} mount: using the rollback journal (DELETE) instead "
        "of WAL, whose shared memory does not work across hosts or VMs "
        "(pass journal_mode= to override)"
    )


def choose_journal_mode(
    path: str | os.PathLike[str],
    requested: str = "auto",
    mountinfo: str | None = None,
) -> tuple[str, str | None]:
    """Pick the journal mode for a database at ``path``.

    Returns ``(mode, warning)``: ``"wal"`` on local filesystems, ``"delete"`` on network and VM
    mounts together with a one-line warning for the user. An explicit ``requested`` mode wins
    without a warning (the caller asked for it). ``mountinfo`` replaces /proc/self/mountinfo
    (tests).
    """
    mode = requested.lower() if isinstance(requested, str) else requested
    if mode != "auto":
        if mode not in JOURNAL_MODES:
            raise InvalidInput(
                f"journal_mode={requested!r}: expected 'auto' or one of {sorted(JOURNAL_MODES)}"
            )
        return mode, None
    fs_type = filesystem_type(path, mountinfo)
    if fs_type is not None and is_network_fs(fs_type):
        return "delete", network_warning(path, fs_type)
    return "wal", None


# Which (pid, resolved file) pairs were already warned about. The pid makes a forked child, a
# new process, warn for itself. This set only grows by one entry per database file opened.
_warned: set[tuple[int, str]] = set()
_warned_lock = threading.Lock()


def warn_once(path: str | os.PathLike[str], message: str, stacklevel: int = 2) -> bool:
    """Emit ``message`` as a :class:`NetworkFilesystemWarning` the first time it concerns this
    file in this process; returns True if it was emitted."""
    key = (os.getpid(), resolve_for_detection(path))
    with _warned_lock:
        if key in _warned:
            return False
        _warned.add(key)
    warnings.warn(message, NetworkFilesystemWarning, stacklevel=stacklevel + 1)
    return True


def _reset_warned_for_tests() -> None:
    with _warned_lock:
        _warned.clear()


__all__ = [
    "NETWORK_FS_TYPES",
    "Mount",
    "NetworkFilesystemWarning",
    "choose_journal_mode",
    "decode_mountinfo_field",
    "filesystem_type",
    "find_mount",
    "is_network_fs",
    "parse_mountinfo",
    "warn_once",
]
