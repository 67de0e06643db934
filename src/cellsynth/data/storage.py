"""The folder an out-of-core fit writes its training matrix to, and the removal of those that fits killed
outright (SIGKILL, the out-of-memory killer) had no chance to remove."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import warnings
from pathlib import Path

#: the training matrix's folder: ``cellsynth-data-<host>-<pid>-<random>``
STORAGE_PREFIX = "cellsynth-data-"


def training_storage(cache_dir) -> tempfile.TemporaryDirectory:
    """A folder for the training matrix in ``cache_dir`` (default: the system's temporary folder), named
    after this host and process. A fit killed outright (SIGKILL, out of memory) cannot remove its folder:
    the folders of this host's processes that no longer run are removed first, with a warning."""
    host = socket.gethostname()
    orphans = orphaned_storage(Path(cache_dir or tempfile.gettempdir()), host)
    for path in orphans:
        shutil.rmtree(path, ignore_errors=True)
    if orphans:
        warnings.warn(
            f"removed {len(orphans)} training-matrix folder(s) left in {orphans[0].parent} by fits that were "
            "killed",
            stacklevel=3,
        )
    return tempfile.TemporaryDirectory(
        prefix=f"{STORAGE_PREFIX}{host}-{os.getpid()}-", dir=cache_dir, ignore_cleanup_errors=True
    )


def orphaned_storage(folder: Path, host: str) -> list[Path]:
    """Training-matrix folders in ``folder`` made on ``host`` by processes that no longer run (a process id
    in use again counts as running: its folder stays)."""
    out = []
    for path in sorted(folder.glob(f"{STORAGE_PREFIX}{host}-*")):
        # <pid>-<random>: the random part holds no "-", so another host whose name extends this one's
        # ("node1-2") does not match
        pid, *rest = path.name[len(STORAGE_PREFIX) + len(host) + 1 :].split("-")
        if path.is_dir() and len(rest) == 1 and pid.isdigit() and not _running(int(pid)):
            out.append(path)
    return out


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


__all__ = ["STORAGE_PREFIX", "orphaned_storage", "training_storage"]
