"""Fixtures of the build-side tests: a tiny real artifact per test, and (``isolated_cache``) the
engine stage's caches (timing caches) kept in the test's own folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from tiny_artifacts import write_tiny_artifact


@pytest.fixture()
def artifact(tmp_path: Path) -> Path:
    return write_tiny_artifact(tmp_path / "tiny")


@pytest.fixture()
def isolated_cache(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
