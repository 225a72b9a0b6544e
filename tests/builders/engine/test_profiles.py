"""builders/engine/profiles.py: --batch MIN:OPT:MAX parsing and validation of the one profile type,
:class:`trtinfer.manifest.BatchProfile` (its manifest form is held by tests/test_manifest_versions.py)."""

from __future__ import annotations

import pytest

from trtinfer.builders.engine.profiles import (DEFAULT_BATCH_SPEC, DEFAULT_PROFILE, MAX_BATCH_LIMIT, MAX_PROFILES,
                                               batch_profile, describe_profiles, parse_batch_profile,
                                               parse_batch_profiles, select_profile, validate_profiles)
from trtinfer.errors import TrtInferError
from trtinfer.manifest import BatchProfile


def test_default_is_1_32_256():
    assert DEFAULT_BATCH_SPEC == "1:32:256"
    assert parse_batch_profiles([]) == [DEFAULT_PROFILE] == [BatchProfile(1, 32, 256)]
    assert parse_batch_profiles(None) == [DEFAULT_PROFILE]


@pytest.mark.parametrize("text, expected", [
    ("1:32:256", (1, 32, 256)),
    (" 4 : 8 : 16 ", (4, 8, 16)),
    ("8", (8, 8, 8)),
    ("1:1:1", (1, 1, 1)),
    (f"1:1:{MAX_BATCH_LIMIT}", (1, 1, MAX_BATCH_LIMIT)),
])
def test_parse_valid(text, expected):
    profile = parse_batch_profile(text)
    assert (profile.min, profile.opt, profile.max) == expected
    assert parse_batch_profile(str(profile)) == profile


@pytest.mark.parametrize("text, words", [
    ("", "MIN:OPT:MAX"),
    ("1:32", "MIN:OPT:MAX"),
    ("1:2:3:4", "MIN:OPT:MAX"),
    ("1::8", "MIN:OPT:MAX"),
    ("a:b:c", "whole number"),
    ("1.5:2:3", "whole number"),
    ("0:1:8", "1 <= MIN"),
    ("-1:1:8", "1 <= MIN"),
    ("8:4:16", "MIN <= OPT <= MAX"),
    ("1:32:16", "MIN <= OPT <= MAX"),
    (f"1:1:{MAX_BATCH_LIMIT + 1}", "above"),
])
def test_parse_invalid_is_one_user_error(text, words):
    with pytest.raises(TrtInferError) as info:
        parse_batch_profile(text)
    assert words in str(info.value)
    assert "\n" not in info.value.one_line()
    assert info.value.hint  # says how to write it


def test_several_profiles_are_sorted_and_must_not_overlap():
    profiles = parse_batch_profiles(["16:64:256", "1:1:8"])
    assert [str(p) for p in profiles] == ["1:1:8", "16:64:256"]
    assert describe_profiles(profiles) == "1:1:8, 16:64:256"
    with pytest.raises(TrtInferError, match="overlap"):
        parse_batch_profiles(["1:4:16", "8:32:64"])
    with pytest.raises(TrtInferError, match="overlap"):
        parse_batch_profiles(["1:4:16", "16:32:64"])  # batch 16 in both
    with pytest.raises(TrtInferError, match="overlap"):
        parse_batch_profiles(["1:4:16", "1:4:16"])
    # Touching but disjoint ranges are fine; gaps are allowed.
    assert len(parse_batch_profiles(["1:4:15", "16:32:64", "100:128:128"])) == 3


def test_too_many_profiles():
    texts = [f"{i}:{i}:{i}" for i in range(1, MAX_PROFILES + 2)]
    with pytest.raises(TrtInferError, match="at most"):
        parse_batch_profiles(texts)
    with pytest.raises(TrtInferError):
        validate_profiles([])


def test_constructor_validates_too():
    with pytest.raises(ValueError):
        BatchProfile(4, 2, 8)
    with pytest.raises(ValueError):
        BatchProfile(True, 2, 8)  # type: ignore[arg-type]
    with pytest.raises(TrtInferError, match="--batch"):  # worded for the CLI
        batch_profile(4, 2, 8)
    with pytest.raises(TrtInferError, match=f"above {MAX_BATCH_LIMIT}"):  # Python callers meet the bound too
        validate_profiles([BatchProfile(1, 2, MAX_BATCH_LIMIT + 1)])


def test_record_round_trip():
    profile = BatchProfile(1, 32, 256)
    assert str(profile) == "1:32:256" and profile.to_dict() == {"min": 1, "opt": 32, "max": 256}
    assert BatchProfile.from_dict(profile.to_dict()) == profile
    assert profile.covers(1) and profile.covers(256) and not profile.covers(257)
    for bad in ({"min": 1, "opt": 32}, [1, 32, 256], {"min": 8, "opt": 4, "max": 16}, {"min": "1", "opt": 2, "max": 3}):
        with pytest.raises(ValueError):
            BatchProfile.from_dict(bad)


def test_shapes_for_tensorrt():
    profile = BatchProfile(1, 32, 256)
    assert profile.shapes((3, 224, 224)) == ((1, 3, 224, 224), (32, 3, 224, 224), (256, 3, 224, 224))
    with pytest.raises(ValueError, match="static"):
        profile.shapes((3, -1, 224))


def test_select_profile():
    profiles = parse_batch_profiles(["1:1:8", "16:64:256"])
    assert select_profile(profiles, 1) == 0
    assert select_profile(profiles, 8) == 0
    assert select_profile(profiles, 16) == 1
    assert select_profile(profiles, 256) == 1
    assert select_profile(profiles, 12) is None
    assert select_profile(profiles, 257) is None
