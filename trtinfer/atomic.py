"""Atomic artifact writes: build in a hidden sibling directory, then rename into place.

A crash, Ctrl-C or failed check leaves the destination exactly as it was (absent or the old
version), never half written.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import ArtifactError
from .interrupts import held_signals

JOURNAL_PREFIX = ".trtinfer-commit-"  # + pid + ".json", beside the artifacts while a commit runs


def _staging_dir(final: Path) -> Path:
    final.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staged, 0o777 & ~umask)  # mkdtemp's 0700 would make shared artifacts unreadable
    return staged


def _remove(path: Path) -> None:
    """Remove a file, a link or a directory tree; nothing when it is gone."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _exists(path: Path) -> bool:
    return path.exists() or path.is_symlink()


def journal_path(directory: Path, pid: int | None = None) -> Path:
    return directory / f"{JOURNAL_PREFIX}{os.getpid() if pid is None else pid}.json"


class StagedDirectories:
    """Stage several artifact directories and commit them together, or none of them.

    The commit renames every old version aside, renames every staged directory into place, then
    removes the old versions. It holds SIGINT/SIGTERM while it does (a few renames), rolls back on
    any error, and keeps a journal beside the artifacts meanwhile: a build killed outright
    (SIGKILL, power loss) leaves the journal, and the next build reports the split set from it.
    """

    def __init__(self, overwrite: bool = False) -> None:
        self.overwrite = overwrite
        self._staged: dict[Path, tuple[Path, bool]] = {}

    def stage(self, final: str | Path, copy_from: str | Path | None = None) -> Path:
        final = Path(final).resolve()
        if _exists(final) and not self.overwrite and copy_from is None:
            raise ArtifactError(f"{final} already exists", hint="pass --force to replace it, or choose another -o")
        with held_signals():  # registered the moment it exists, so discard() always finds it
            staged = _staging_dir(final)
            # Updating an artifact in place (copy_from itself) always replaces the old version.
            self._staged[final] = (staged, self.overwrite or copy_from is not None)
        if copy_from is not None:
            shutil.copytree(copy_from, staged, dirs_exist_ok=True)
        return staged

    def path_for(self, final: str | Path) -> Path:
        """The staging directory standing in for ``final`` until commit."""
        return self._staged[Path(final).resolve()][0]

    def commit(self) -> list[Path]:
        items = list(self._staged.items())
        for final, (_, overwrite) in items:
            if _exists(final) and not overwrite:
                raise ArtifactError(f"{final} already exists", hint="pass --force to replace it, or choose another -o")
        pid = os.getpid()
        backups = {final: final.with_name(f".{final.name}.old-{pid}") for final, _ in items}
        journals = sorted({journal_path(final.parent) for final, _ in items})
        record = {"pid": pid, "artifacts": [str(f) for f, _ in items],
                  "staged": {str(f): str(s) for f, (s, _) in items}, "backups": {str(f): str(b) for f, b in backups.items()}}
        with held_signals() as held:
            for journal in journals:
                journal.write_text(json.dumps(record, indent=1), encoding="utf-8")
            moved: list[Path] = []
            placed: list[Path] = []
            try:
                for final, (staged, _) in items:
                    if _exists(final):
                        os.replace(final, backups[final])
                        moved.append(final)
                    os.rename(staged, final)
                    placed.append(final)
            except BaseException:
                for final in reversed(placed):  # back to staging, where discard() removes it
                    os.rename(final, self._staged[final][0])
                for final in reversed(moved):
                    os.replace(backups[final], final)
                for journal in journals:
                    _remove(journal)
                raise
            for final in moved:
                _remove(backups[final])
            for journal in journals:
                _remove(journal)
            self._staged.clear()
            held.written = [final for final, _ in items]  # an interrupt held meanwhile reports these
        return held.written

    def discard(self) -> None:
        with held_signals():
            for staged, _ in self._staged.values():
                _remove(staged)
            self._staged.clear()

    def __enter__(self) -> StagedDirectories:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.discard()


def interrupted_commits(directory: Path) -> list[tuple[Path, dict]]:
    """Journals that killed commits left in ``directory``: (journal path, its record)."""
    found = []
    for path in sorted(Path(directory).glob(f"{JOURNAL_PREFIX}*.json")) if Path(directory).is_dir() else []:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = {}
        found.append((path, data if isinstance(data, dict) else {}))
    return found


def describe_split_set(journal: dict) -> str:
    """Which artifacts of a killed commit hold the new build and which the old (or none)."""
    parts = []
    staged = journal.get("staged") or {}
    backups = journal.get("backups") or {}
    for final in journal.get("artifacts") or []:
        name = Path(final).name
        if Path(str(staged.get(final, ""))).exists():
            state = "old version (the new one was never moved in)" if Path(final).exists() else "missing"
        elif Path(str(backups.get(final, ""))).exists():
            state = "new version (its old version still sits aside)"
        else:
            state = "new version" if Path(final).exists() else "missing"
        parts.append(f"{name}: {state}")
    return "; ".join(parts)


def clean_interrupted_commit(journal_file: Path, journal: dict) -> None:
    """Remove what a killed commit left: its staging directories, the old versions set aside, the journal."""
    directory = journal_file.parent
    for path in [*(journal.get("staged") or {}).values(), *(journal.get("backups") or {}).values()]:
        if Path(str(path)).parent == directory:
            _remove(Path(str(path)))
    _remove(journal_file)


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
