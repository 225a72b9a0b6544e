"""The tuning cache (``tuning.json``: measured backend and spinning choices) is a cache: an entry with a
missing or mistyped field, a malformed, huge or non-regular file is ignored with a warning and measured
again, never a traceback from ``load`` or ``trtinfer predict``, never a hang."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import trtinfer
from trtinfer.cli import main
from trtinfer.runtime import tuning

KEY = "onnxruntime-spin-throughput|0123|cpu|onnxruntime 1|threads=1"


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """A tuning cache of the test's own (``tuning.tuning_path()``), its folder made."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    path = tuning.tuning_path()
    path.parent.mkdir(parents=True)
    return path


def _write(path: Path, entries) -> None:
    path.write_text(json.dumps({"version": tuning.TUNING_VERSION, "entries": entries}), encoding="utf-8")


def _strip_why(path: Path) -> int:
    """Remove every entry's ``why`` (as an older or hand-edited cache may lack it); how many entries."""
    data = json.loads(path.read_text(encoding="utf-8"))
    for entry in data["entries"].values():
        del entry["why"]
    path.write_text(json.dumps(data), encoding="utf-8")
    return len(data["entries"])


def test_a_good_entry_is_returned(cache):
    _write(cache, {KEY: {"spin": True, "why": "measured"}})
    assert tuning.lookup(KEY) == {"spin": True, "why": "measured"}
    assert tuning.lookup("another key") is None


@pytest.mark.parametrize("entry, problem", [
    ({"spin": True}, "'why' is missing"),
    ({"spin": True, "why": 3}, "'why' is of type int, not str"),
    ({"spin": "yes", "why": "measured"}, "'spin' is of type str, not bool"),
    ({"execution": ["onnxruntime"], "why": "measured"}, "'execution' is of type list, not str"),
    ({"spin": True, "why": "x" * 100_000}, "'why' is 100,000 characters long"),
    (["spin", True], "is a list, not an object"),
])
def test_a_bad_entry_is_ignored_with_a_warning(cache, caplog, entry, problem):
    _write(cache, {KEY: entry, "other": {"spin": False, "why": "kept"}})
    with caplog.at_level(logging.WARNING, logger="trtinfer.runtime.tuning"):
        assert tuning.lookup(KEY) is None
    assert [r.getMessage() for r in caplog.records] == [
        f"tuning cache {cache}: entry {KEY!r} {problem}; ignored, measured again"]
    assert tuning.lookup("other") == {"spin": False, "why": "kept"}  # the rest of the cache stands
    tuning.remember(KEY, {"spin": False, "why": "measured again"})
    assert tuning.lookup(KEY) == {"spin": False, "why": "measured again"}


@pytest.mark.parametrize("content, problem", [
    ("{not json", "is not JSON"),
    ("[" + " " * (1 << 20) + "]", "over the 1,048,576-byte bound"),
    ("[" * 50_000 + "]" * 50_000, "is nested too deeply"),
    (json.dumps({"version": tuning.TUNING_VERSION, "entries": []}), "is not a version-3 tuning cache"),
    (b"\xff\xfe not UTF-8", "is not UTF-8"),
])
def test_a_malformed_or_huge_cache_is_ignored_with_a_warning(cache, caplog, content, problem):
    if isinstance(content, bytes):
        cache.write_bytes(content)
    else:
        cache.write_text(content, encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="trtinfer.runtime.tuning"):
        assert tuning.lookup(KEY) is None
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1 and problem in messages[0] and "ignored, measured again" in messages[0], messages
    tuning.remember(KEY, {"spin": True, "why": "measured again"})  # the cache is written anew
    assert tuning.lookup(KEY) == {"spin": True, "why": "measured again"}


@pytest.mark.timeout(20)
def test_a_fifo_as_the_cache_is_ignored_not_read(cache, caplog):
    os.mkfifo(cache)
    with caplog.at_level(logging.WARNING, logger="trtinfer.runtime.tuning"):
        assert tuning.lookup(KEY) is None  # no writer: opening it for reading would block for ever
    assert "is a FIFO (named pipe), not a regular file" in caplog.text
    tuning.remember(KEY, {"spin": True, "why": "measured"})  # replaces the FIFO with a file
    assert cache.is_file() and tuning.lookup(KEY) == {"spin": True, "why": "measured"}


def test_a_missing_cache_or_an_older_version_is_no_warning(cache, caplog):
    with caplog.at_level(logging.WARNING, logger="trtinfer.runtime.tuning"):
        assert tuning.lookup(KEY) is None
        cache.write_text(json.dumps({"version": 1, "entries": {KEY: {"spin": True}}}), encoding="utf-8")
        assert tuning.lookup(KEY) is None  # an older trtinfer's measurements: dropped, as the version says
    assert not caplog.records


def test_load_with_entries_lacking_why_measures_again(artifact_copy, cache, caplog):
    """The KeyError traceback this was: a cached spinning choice without its ``why``."""
    with trtinfer.load(artifact_copy, backend="onnxruntime", threads=1) as model:
        assert model.spin_reason.startswith("measured: ")
    assert _strip_why(cache) == 1
    with caplog.at_level(logging.WARNING, logger="trtinfer.runtime.tuning"):
        with trtinfer.load(artifact_copy, backend="onnxruntime", threads=1) as model:
            assert model.spin_reason.startswith("measured: ")
    assert "'why' is missing; ignored, measured again" in caplog.text
    with trtinfer.load(artifact_copy, backend="onnxruntime", threads=1) as model:  # written anew, whole
        assert model.spin_reason.startswith("cached measurement: ")


def test_predict_with_entries_lacking_why_measures_again(artifact_copy, cache, tmp_path, capsys):
    """``trtinfer predict`` (backend auto: the backend choice and the spinning choice, both cached) printed a
    KeyError traceback for a cache whose entries lack ``why``."""
    image = tmp_path / "gray.png"
    Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(image)
    assert main(["predict", str(artifact_copy), str(image)]) == 0
    capsys.readouterr()
    assert _strip_why(cache) >= 1
    code = main(["predict", str(artifact_copy), str(image)])
    out, err = capsys.readouterr()
    assert code == 0 and "Traceback" not in err and "KeyError" not in err, err
    assert out.startswith(f"{image}: ")
