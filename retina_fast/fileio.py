"""Atomic file writes: a temporary name in the same folder, flushed to disk, then renamed.

Every file the package writes goes through `atomic_write` (or a helper built on it), so a process
killed at any moment leaves either the complete previous file or the complete new one, never a
half-written file under the final name:

    with atomic_write(path) as f:            # f: a binary file open on '.<name>.tmp<pid>'
        torch.save(obj, f)

The temporary is hidden and named ``.<name>.tmp<pid>`` (it never ends in the final name's extension,
so a pattern such as ``snapshot-*.pt`` or ``*.png`` never picks it up). On success it is flushed and
fsynced, renamed over `path` with `os.replace` and the folder is fsynced (so the rename itself
survives a power cut); on any error it is removed and the error propagates. A writer killed hard
(SIGKILL) leaves its temporary behind: `remove_stale_temp_files` deletes those whose process is gone.
"""
import contextlib
import os
import re
import shutil

__all__ = ["temp_name", "atomic_write", "write_bytes_atomic", "write_text_atomic", "copy_atomic",
           "fsync_dir", "remove_stale_temp_files"]

# The temporary names `temp_name` gives: '.NAME.tmpPID'.
_TEMP_NAME = re.compile(r"^\..+\.tmp(\d+)$")


def temp_name(path):
    """The temporary name for `path`: ``.<name>.tmp<pid>`` in the same folder."""
    folder, base = os.path.split(os.fspath(path))
    return os.path.join(folder, f".{base}.tmp{os.getpid()}")


def fsync_dir(folder):
    """Flush `folder`'s entries (a rename into it) to disk; a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder or ".", os.O_RDONLY)
    except OSError:  # e.g. Windows, where a folder cannot be opened for reading
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on a folder; the rename is still atomic
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path, mode="wb", *, encoding=None, newline=None, permissions=None):
    """Open a temporary beside `path` for writing; on a clean exit it replaces `path` atomically.

    Parameters
    ----------
    path : str or os.PathLike
        The final file. Its folder must exist.
    mode : {'wb', 'w', 'w+b', 'w+'}
        Binary or text, as for `open`.
    encoding, newline : str, optional
        As for `open`, text mode only (`write_text_atomic` uses UTF-8 and no newline translation).
    permissions : int, optional
        File mode bits (e.g. ``0o600``) set on the temporary before the rename, so the final name
        never exists with wider permissions.

    Yields
    ------
    file object
        Open on the temporary name; closed by the context manager.
    """
    if mode not in ("wb", "w", "w+b", "w+"):
        raise ValueError(f"mode must be 'wb', 'w', 'w+b' or 'w+', got {mode!r}")
    path = os.fspath(path)
    tmp = temp_name(path)
    try:
        with open(tmp, mode, encoding=encoding, newline=newline) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        if permissions is not None:
            os.chmod(tmp, permissions)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    fsync_dir(os.path.dirname(path))


def write_bytes_atomic(path, data):
    """Write `data` (bytes) to `path` atomically; returns `path`."""
    with atomic_write(path) as f:
        f.write(data)
    return path


def write_text_atomic(path, text, mode=None):
    """Write `text` (UTF-8, newlines as given) to `path` atomically; returns `path`.

    `mode` (e.g. ``0o600``) is set on the temporary before the rename.
    """
    with atomic_write(path, "w", encoding="utf-8", newline="", permissions=mode) as f:
        f.write(text)
    return path


def copy_atomic(src, dst):
    """Copy file `src` to `dst` through a temporary and a rename; returns `dst`."""
    with open(src, "rb") as s, atomic_write(dst) as d:
        shutil.copyfileobj(s, d)
    return dst


def _pid_alive(pid):
    if pid <= 0:  # 0 and negatives name process groups, never a writer
        return False
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except PermissionError:  # another user's process
        return True
    except (ProcessLookupError, OverflowError):
        return False
    return True


def remove_stale_temp_files(folder, recursive=False):
    """Delete the temporaries ('.NAME.tmpPID') that killed writers left in `folder`.

    Only files whose writing process is no longer running are removed, so a writer still at work in
    the same folder keeps its file. Returns the removed paths.
    """
    removed = []
    for root, dirs, files in os.walk(folder):
        for f in files:
            m = _TEMP_NAME.match(f)
            if m and not _pid_alive(int(m.group(1))):
                path = os.path.join(root, f)
                try:
                    os.remove(path)
                except FileNotFoundError:  # removed meanwhile by another cleaner
                    continue
                removed.append(path)
        if not recursive:
            break
    return removed
