"""Atomic artifact writes: build in a hidden sibling directory, then rename into place.

A crash, Ctrl-C or failed check leaves the destination exactly as it was (absent or the old
version), never half written.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import ArtifactError, TrtInferError
from .files import read_bounded
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


def _folder(final: str | Path) -> Path:
    """``final`` with its parent resolved but not itself: a folder that is a link is replaced as a link (the
    link set aside and removed), never through its target."""
    final = Path(final)
    return final.parent.resolve() / final.name


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
        final = _folder(final)
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
        return self._staged[_folder(final)][0]

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


#: A commit journal holds three paths per artifact; a file past this bound is not one.
MAX_JOURNAL_BYTES = 1 << 22
_JOURNAL_NAME = re.compile(re.escape(JOURNAL_PREFIX) + r"([1-9][0-9]{0,9})\.json")
#: the random part ``tempfile.mkdtemp`` adds to a staging folder's name
_STAGING_RANDOM = "[a-z0-9_]{8}"
#: an artifact folder's own name: one path component, no leading dot (ours never have one), no line breaks
_FOLDER_NAME = re.compile(r"[^./\x00\r\n][^/\x00\r\n]*")


@dataclass(frozen=True)
class Leftover:
    """What a killed commit left of one artifact folder: the folder, its staging folder, its old version set aside."""

    final: Path
    staged: Path
    backup: Path

    def put_right(self) -> str:
        """Undo the killed commit for this folder; says what it holds now. An old version set aside whose new one
        never moved in is put back (it is the only copy); links are unlinked, never followed."""
        moved_in = not _exists(self.staged)
        _remove(self.staged)
        if not _exists(self.final) and self.backup.is_dir() and not self.backup.is_symlink():
            os.rename(self.backup, self.final)
            return "old version, put back (the new one was never moved in)"
        _remove(self.backup)
        if not _exists(self.final):
            return "missing (it was new and never moved in)"
        return "new version" if moved_in else "old version (the new one was never moved in)"


def journal_leftovers(record: object, pid: int, directory: Path) -> list[Leftover]:
    """The leftovers the journal ``record`` of the killed commit ``pid`` names, when every entry is exactly what
    :meth:`StagedDirectories.commit` writes for folders of ``directory`` (resolved): ``DIR/<name>``,
    ``DIR/.<name>.tmp-<8 random>``, ``DIR/.<name>.old-<pid>``. ValueError naming the first entry that is not:
    such a journal was not written by us, and nothing it names may be removed."""
    if not isinstance(record, dict):
        raise ValueError("it is not a record of pid, artifacts, staged and backups")
    if type(record.get("pid")) is not int or record["pid"] != pid:
        raise ValueError(f"its pid {record.get('pid')!r} is not the {pid} of its file name")
    finals, staged, backups = record.get("artifacts"), record.get("staged"), record.get("backups")
    if not (isinstance(finals, list) and isinstance(staged, dict) and isinstance(backups, dict)
            and all(isinstance(f, str) for f in finals) and set(staged) == set(backups) == set(finals)):
        raise ValueError("its artifacts, staged and backups entries do not name the same folders")
    leftovers = []
    for final in finals:
        name = Path(final).name
        if not _FOLDER_NAME.fullmatch(name) or final != str(directory / name):
            raise ValueError(f"it names {final!r}, not a folder of {directory}")
        stage, backup = staged[final], backups[final]
        if not (isinstance(stage, str) and stage == str(directory / Path(stage).name)
                and re.fullmatch(re.escape(f".{name}.tmp-") + _STAGING_RANDOM, Path(stage).name)):
            raise ValueError(f"it names {stage!r}, not a staging folder of {name}")
        if backup != str(directory / f".{name}.old-{pid}"):
            raise ValueError(f"it names {backup!r}, not the old version of {name} that pid {pid} set aside")
        leftovers.append(Leftover(directory / name, Path(stage), Path(backup)))
    return leftovers


def read_journal(path: Path, pid: int, directory: Path) -> list[Leftover]:
    """:func:`journal_leftovers` of the journal file ``path`` (not a link; a bounded regular file); one line
    (ArtifactError) for anything else, which then stays where it is."""
    try:
        if path.is_symlink():
            raise ValueError("it is a symbolic link")
        record = json.loads(read_bounded(path, MAX_JOURNAL_BYTES, "the journal", ArtifactError).decode("utf-8"))
        return journal_leftovers(record, pid, directory)
    except TrtInferError as exc:
        why = exc.message
    except (OSError, ValueError, RecursionError) as exc:  # RecursionError: JSON nested past Python's stack
        why = str(exc)
    raise ArtifactError(f"{path} is not a commit journal trtinfer wrote ({why}); nothing it names was touched",
                        hint=f"remove it (rm {path}) once no trtinfer build or export into {directory.name} is running")


def recover_killed_commits(directory: str | Path, say: Callable[[str], None], who: str = "a build",
                           then: str = "Rebuild those artifacts together (--force) so that they come from one "
                                       "checkpoint and one build") -> None:
    """Put right what commits killed outright (SIGKILL, power loss) left in ``directory`` and say so, naming the
    split set. Every journal is read and checked before anything is touched; a journal that is not exactly one
    of ours is refused (:func:`read_journal`)."""
    directory = Path(directory)
    if not directory.is_dir():
        return
    real = directory.resolve()
    journals = [(path, int(match[1])) for path in sorted(directory.glob(f"{JOURNAL_PREFIX}*"))
                if (match := _JOURNAL_NAME.fullmatch(path.name))]
    for path, pid, leftovers in [(path, pid, read_journal(path, pid, real)) for path, pid in journals]:
        states = "; ".join(f"{left.final.name}: {left.put_right()}" for left in leftovers)
        path.unlink()
        say(f"{who} (pid {pid}) was killed while committing in {directory}, leaving a split set: {states}. {then}")


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
