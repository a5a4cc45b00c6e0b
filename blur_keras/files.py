"""Files written whole: a reader sees the old file or the new one, never a part.

``write_atomic(path, data)`` writes ``data`` (``str`` or ``bytes``) to a temporary file in the
same folder, flushes it to disk (``fsync``) and renames it over ``path`` (``os.replace``, atomic
on POSIX file systems), then syncs the folder so the rename itself survives a crash. A process
killed at any moment leaves ``path`` as it was, plus at most one temporary file
(``.<name>.<random>.partial``) that ``remove_partial_writes`` clears.
"""

import json
import os
import tempfile

__all__ = ["PARTIAL_SUFFIX", "remove_partial_writes", "write_atomic", "write_json"]

PARTIAL_SUFFIX = ".partial"


def _sync_dir(directory):
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # a folder that cannot be opened (some platforms): the rename still holds
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path, data):
    """Write ``data`` (``str``: UTF-8, or ``bytes``) to ``path`` atomically; returns ``path``."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    elif not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"write_atomic({path!r}): expected str or bytes, got "
                        f"{type(data).__name__}.")
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=PARTIAL_SUFFIX,
                               dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    _sync_dir(directory)
    return path


def write_json(path, value, indent=1, **kwargs):
    """``value`` as JSON text in ``path``, written atomically (``write_atomic``)."""
    return write_atomic(path, json.dumps(value, indent=indent, **kwargs))


def remove_partial_writes(directory):
    """Delete the temporary files a killed ``write_atomic`` left in ``directory``; returns
    their names. Only call it where no other process writes (a locked run directory)."""
    if not os.path.isdir(directory):
        return []
    removed = []
    for name in sorted(os.listdir(directory)):
        if name.startswith(".") and name.endswith(PARTIAL_SUFFIX):
            try:
                os.remove(os.path.join(directory, name))
                removed.append(name)
            except OSError:
                pass
    return removed
