"""Atomic artifact writes: build in a hidden sibling directory, then rename into place.

A crash, Ctrl-C or failed check leaves the destination exactly as it was (absent or the old
version), never half written.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import ArtifactError


def _staging_dir(final: Path) -> Path:
    final.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staged, 0o777 & ~umask)  # mkdtemp's 0700 would make shared artifacts unreadable
    return staged


def commit_directory(staged: Path, final: Path, overwrite: bool) -> None:
    """Move a fully written staging directory onto ``final`` (same filesystem, so rename)."""
    if final.exists():
        if not overwrite:
            raise ArtifactError(f"{final} already exists", hint="pass --force to replace it, or choose another -o")
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
        try:
            os.replace(staged, final)
        except BaseException:
            os.replace(old, final)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staged, final)


class StagedDirectories:
    """Stage several artifact directories and commit them together, or none of them."""

    def __init__(self, overwrite: bool = False) -> None:
        self.overwrite = overwrite
        self._staged: dict[Path, tuple[Path, bool]] = {}

    def stage(self, final: str | Path, copy_from: str | Path | None = None) -> Path:
        final = Path(final).resolve()
        if final.exists() and not self.overwrite and copy_from is None:
            raise ArtifactError(f"{final} already exists", hint="pass --force to replace it, or choose another -o")
        staged = _staging_dir(final)
        if copy_from is not None:
            shutil.copytree(copy_from, staged, dirs_exist_ok=True)
        # Updating an artifact in place (copy_from itself) always replaces the old version.
        self._staged[final] = (staged, self.overwrite or copy_from is not None)
        return staged

    def path_for(self, final: str | Path) -> Path:
        """The staging directory standing in for ``final`` until commit."""
        return self._staged[Path(final).resolve()][0]

    def commit(self) -> list[Path]:
        done = []
        for final, (staged, overwrite) in self._staged.items():
            commit_directory(staged, final, overwrite=overwrite)
            done.append(final)
        self._staged.clear()
        return done

    def discard(self) -> None:
        for staged, _ in self._staged.values():
            shutil.rmtree(staged, ignore_errors=True)
        self._staged.clear()

    def __enter__(self) -> StagedDirectories:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.discard()


@contextlib.contextmanager
def atomic_file(path: str | Path, mode: str = "wb") -> Iterator:
    """Write a single file atomically (temporary sibling, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
