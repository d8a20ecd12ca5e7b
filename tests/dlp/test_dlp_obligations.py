"""Obligations: validation, from_dict/to_dict round trip, typed errors naming the bad value."""

from __future__ import annotations

import pytest

import dlp


def test_defaults() -> None:
    ob = dlp.Obligations()
    assert (ob.fields, ob.detectors, ob.mode, ob.hash_key, ob.on_binary) == ((), (), "mask", None, "pass")


def test_from_dict_and_back() -> None:
    data = {
        "fields": ["ssn", "$.customer.address"],
        "detectors": ["EMAIL", "PHONE"],
        "mode": "partial",
        "on_binary": "block",
        "thresholds": {"PHONE": 0.7},
    }
    ob = dlp.Obligations.from_dict(data)
    assert ob.fields == ("ssn", "$.customer.address") and ob.detectors == ("EMAIL", "PHONE")
    assert ob.thresholds == (("PHONE", 0.7),)
    assert ob.to_dict() == data
    assert dlp.Obligations.from_dict(ob.to_dict()) == ob


def test_from_dict_accepts_comma_strings_and_all() -> None:
    ob = dlp.Obligations.from_dict({"fields": "ssn, dob", "detectors": "ALL"})
    assert ob.fields == ("ssn", "dob") and ob.detectors == ("ALL",)


def test_hash_key_never_serialised() -> None:
    ob = dlp.Obligations.from_dict({"detectors": ["*"], "mode": "hash"}, hash_key=b"s" * 32)
    assert "hash_key" not in ob.to_dict() and "sss" not in repr(ob)


@pytest.mark.parametrize(
    ("kwargs", "error", "needle"),
    [
        ({"mode": "shred"}, dlp.InvalidObligations, "shred"),
        ({"mode": "hash"}, dlp.InvalidObligations, "hash_key"),
        ({"mode": "hash", "hash_key": b"short"}, dlp.InvalidObligations, "hash_key"),
        ({"on_binary": "maybe"}, dlp.InvalidObligations, "maybe"),
        ({"detectors": ("PASSPORT",)}, dlp.UnknownDetector, "PASSPORT"),
        ({"fields": ("$.a[",)}, dlp.InvalidObligations, "$.a["),
        ({"fields": ("",)}, dlp.InvalidObligations, "empty"),
        ({"fields": ("$..",)}, dlp.InvalidObligations, "$.."),
        ({"thresholds": (("EMAIL", 1.5),)}, dlp.UnknownDetector, "EMAIL"),
    ],
)
def test_invalid(kwargs: dict[str, object], error: type[Exception], needle: str) -> None:
    with pytest.raises(error, match=None) as info:
        dlp.Obligations(**kwargs)  # type: ignore[arg-type]
    assert needle in str(info.value)


@pytest.mark.parametrize(
    "data",
    [{"fields": 3}, {"detectors": [1]}, {"mode": "mask", "colour": "red"}, {"thresholds": {"EMAIL": "high"}}, []],
)
def test_from_dict_invalid(data: object) -> None:
    with pytest.raises(dlp.InvalidObligations):
        dlp.Obligations.from_dict(data)  # type: ignore[arg-type]


def test_obligations_are_frozen_and_hashable() -> None:
    ob = dlp.Obligations(fields=("ssn",))
    with pytest.raises(AttributeError):
        ob.mode = "remove"  # type: ignore[misc]
    assert hash(ob) == hash(dlp.Obligations(fields=("ssn",)))
