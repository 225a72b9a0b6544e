"""Where a build will write, checked before any work: a build that can only fail at the end (a
file in the way, a read-only folder, a name too long, an artifact that exists) fails first.
(What a build killed while committing left behind is put right by :func:`trtinfer.atomic.recover_killed_commits`.)"""

from __future__ import annotations

import os
from pathlib import Path

from trtinfer.errors import ArtifactError

#: Longest artifact directory name: the staging name adds ``.`` + ``.tmp-`` + 8 random characters,
#: and most file systems stop at 255 bytes.
MAX_NAME_BYTES = 200


def check_destination(out_dir: Path, names: list[str], force: bool, flag: str = "-o",
                      layout: str = "each artifact goes to OUT/<name>-<precision>/") -> None:
    """Raise ArtifactError (one line, with the fix) for the first problem with ``out_dir/<name>``
    (``flag`` names the option that chose ``out_dir``, ``layout`` what goes into it)."""
    out_dir = Path(out_dir)
    for name in names:
        if len(name.encode()) > MAX_NAME_BYTES:
            raise ArtifactError(f"artifact name {name[:40]}... is {len(name.encode())} bytes long; at most "
                                f"{MAX_NAME_BYTES} fit the file system with the staging suffix",
                                hint="pass a shorter --name")
    existing = out_dir
    while not existing.exists() and not existing.is_symlink():
        if existing.parent == existing:
            break
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        what = "a file" if existing.is_file() else "not a directory"
        where = f"{flag} {out_dir}" if existing == out_dir else f"{flag} {out_dir}: {existing}"
        raise ArtifactError(f"{where} is {what}", hint=f"pass a directory for {flag} ({layout})")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ArtifactError(f"{flag} {out_dir}: {existing} is not writable",
                            hint=f"choose another {flag}, or fix its permissions")
    for name in names:
        final = out_dir / name
        if (final.exists() or final.is_symlink()) and not force:
            raise ArtifactError(f"{final} already exists", hint=f"pass --force to replace it, or choose another {flag}")
