"""Writing outputs so that readers never see a half-written file."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable


class OutputPathError(OSError):
    """An output path that cannot be written: not a regular file, or its folder cannot take a new file."""


def check_output_path(path: str | Path) -> Path:
    """Raise OutputPathError naming ``path`` where :func:`atomic_write` could not replace it; cheap, so commands
    call it before the work that produces the output."""
    path = Path(path)
    if path.exists() and not path.is_file():
        # Renaming onto a device or a folder would replace it (as root, /dev/null becomes a regular file).
        raise OutputPathError(f"cannot write {path}: it is {'a directory' if path.is_dir() else 'not a regular file'}")
    folder = path.parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise OutputPathError(f"cannot write {path}: {folder} is not a directory")
    if os.statvfs(folder).f_flag & os.ST_RDONLY:
        raise OutputPathError(f"cannot write {path}: {folder} is on a read-only file system")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputPathError(f"cannot write {path}: no permission to create files in {folder}")
    return path


def atomic_write(path: str | Path, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` on a temporary file next to ``path``, then rename it into place.

    Only regular files (or new paths) are replaced. The temporary file is removed on any exception, including
    KeyboardInterrupt and whatever a SIGTERM handler raises. The file gets the usual permissions (0666 minus the
    umask), not mkstemp's private 0600.
    """
    path = check_output_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise OutputPathError(f"cannot write {path}: {e.strerror or e}") from e
    try:
        os.close(fd)
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
