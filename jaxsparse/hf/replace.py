"""Put a finished folder in place of another, so that its name always names a complete folder.

A folder is built under a temporary sibling name `.<name>.tmp-<random>` (`staging`), which the
building process holds locked (flock) while it lives. `put_in_place` then gives it the target's name:
- no target: one rename;
- a target: on Linux, one renameat2(RENAME_EXCHANGE) swaps the two names atomically, and the old
  folder, now under the temporary name, is removed. A kill at any moment leaves the target naming
  either the old folder or the new one, both complete; what is left is a temporary sibling.
  Where the file system cannot exchange names (not Linux; some network file systems), the old
  folder is renamed aside first (`.<name>.tmp-<random>.old`), leaving a moment without the target.
`remove_leftovers` removes the temporary siblings of a target that no live process holds (left by a
kill), and the `<name>.old-<8 hex digits>` folders that earlier versions moved aside.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import re
import shutil
import tempfile
from collections.abc import Iterator

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _tmp_prefix(target: str) -> str:
    return f".{os.path.basename(target)}.tmp-"


@contextlib.contextmanager
def staging(target: str) -> Iterator[str]:
    """A new empty temporary sibling of `target` (absolute), locked while the block runs and
    removed after it unless it was put in place."""
    tmp = tempfile.mkdtemp(prefix=_tmp_prefix(target), dir=os.path.dirname(target))
    fd = os.open(tmp, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield tmp
    finally:
        os.close(fd)
        shutil.rmtree(tmp, ignore_errors=True)


def _exchange(a: str, b: str) -> bool:
    """Swap the names `a` and `b` atomically; False where the system or file system cannot."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(err, f"cannot exchange {a} and {b}: {os.strerror(err)}")


def put_in_place(tmp: str, target: str) -> None:
    """Give the finished folder `tmp` the name `target` (absolute, no symlink), replacing a folder
    there (see the module docstring); the old folder is removed after."""
    if not os.path.lexists(target):
        os.rename(tmp, target)
        return
    if _exchange(tmp, target):
        old = tmp
    else:
        old = f"{tmp}.old"
        os.rename(target, old)
        os.rename(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


def _held(path: str) -> bool:
    """Whether a live process holds the lock of the folder `path`."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def leftovers(target: str) -> list[str]:
    """The temporary and moved-aside siblings of `target` (absolute) that no live process holds."""
    parent, base = os.path.split(target)
    legacy = re.compile(re.escape(base) + r"\.old-[0-9a-f]{8}")
    found = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(parent):
            ours = entry.name.startswith(_tmp_prefix(target)) or legacy.fullmatch(entry.name)
            if ours and (entry.is_symlink() or entry.is_dir(follow_symlinks=False)) and not _held(entry.path):
                found.append(entry.path)
    return sorted(found)


def remove_leftovers(target: str) -> list[str]:
    """Remove `leftovers(target)` (a symlink itself, never what it points to); returns their paths."""
    found = leftovers(target)
    for path in found:
        if os.path.islink(path):
            os.unlink(path)
        else:
            shutil.rmtree(path, ignore_errors=True)
    return found
