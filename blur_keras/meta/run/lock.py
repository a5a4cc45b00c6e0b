"""One process per run directory: ``run.lock`` in ``model_dir``.

The lock file is created with ``O_CREAT | O_EXCL`` and holds the holder's pid, host name,
process start time and the time it was taken (JSON). A second process finds it and refuses to
start (``RunDirLocked``, one line naming the holder). A lock left by a killed process is stale
when its host is this host and its pid is not alive (or is a newer process with the same pid):
it is taken over, with a warning. Taking over is done under an ``flock`` of the run directory,
so two processes that find the same stale lock cannot both take it. A lock held on another host
cannot be checked: the message says which file to delete once that run is known to be gone.
"""

import fcntl
import json
import os
import socket
import time

from absl import logging

from blur_keras.files import remove_partial_writes

__all__ = ["LOCK_NAME", "RunDirLocked", "RunDirLock"]

LOCK_NAME = "run.lock"


class RunDirLocked(RuntimeError):
    """Another live process holds the run directory."""


def _start_time(pid):
    """The start time of process ``pid`` (clock ticks since boot), or None where unknown."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return int(fh.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _alive(pid, start):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    now = _start_time(pid)
    return start is None or now is None or now == start


def _read(path):
    """The holder recorded in ``path`` (a dict), ``{}`` for an unreadable file, None if absent."""
    try:
        with open(path) as fh:
            holder = json.load(fh)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


class RunDirLock:
    """``with RunDirLock(model_dir):`` holds ``model_dir/run.lock`` (see the module docstring).

    ``grace``: seconds an unreadable lock file (being written by its creator) is respected.
    """

    def __init__(self, model_dir, grace=5.0):
        self.model_dir = model_dir
        self.path = os.path.join(model_dir, LOCK_NAME)
        self.grace = float(grace)
        self.held = False

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()

    def _me(self):
        pid = os.getpid()
        return {"pid": pid, "host": socket.gethostname(), "start": _start_time(pid),
                "time": time.strftime("%Y-%m-%d %H:%M:%S %z")}

    def _create(self):
        """Create the lock file; False when it exists."""
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as fh:
            json.dump(self._me(), fh)
            fh.flush()
            os.fsync(fh.fileno())
        return True

    def _stale(self, holder):
        """Why ``holder`` no longer holds the lock, or None while it may."""
        if not holder:
            age = time.time() - os.path.getmtime(self.path)
            return f"an unreadable lock file {age:.0f}s old" if age > self.grace else None
        if holder.get("host") != socket.gethostname():
            return None
        pid = holder.get("pid")
        if not isinstance(pid, int) or not _alive(pid, holder.get("start")):
            return f"process {pid} on {holder.get('host')} (taken {holder.get('time')}) is gone"
        return None

    def _refusal(self, holder):
        who = (f"process {holder.get('pid')} on host {holder.get('host')} since "
               f"{holder.get('time')}") if holder else "a process that is writing the lock file"
        other_host = holder and holder.get("host") != socket.gethostname()
        hint = (f"; if that run is gone, delete {self.path}" if other_host
                else "; wait for it to end, or use another --model_dir")
        return f"{self.model_dir} is in use by {who} (lock {self.path}){hint}."

    def acquire(self):
        os.makedirs(self.model_dir, exist_ok=True)
        if not self._create():
            self._take_over()
        self.held = True
        removed = remove_partial_writes(self.model_dir)
        if removed:
            logging.info("Removed files of interrupted writes in %s: %s", self.model_dir, removed)

    def _take_over(self):
        fd = os.open(self.model_dir, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            holder = _read(self.path)
            if holder is None and self._create():
                return
            holder = _read(self.path) if holder is None else holder
            reason = None if holder is None else self._stale(holder)
            if reason is None:
                raise RunDirLocked(self._refusal(holder or {}))
            logging.warning("Taking over the stale lock %s: %s.", self.path, reason)
            os.remove(self.path)
            if not self._create():
                raise RunDirLocked(self._refusal(_read(self.path) or {}))
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def release(self):
        """Remove the lock file if this process holds it."""
        if not self.held:
            return
        self.held = False
        holder = _read(self.path)
        if holder and holder.get("pid") == os.getpid() and \
                holder.get("host") == socket.gethostname():
            os.remove(self.path)
