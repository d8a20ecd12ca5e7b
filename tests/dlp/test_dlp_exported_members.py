"""The public API is exactly ``dlp.__all__``, and everything in it is documented."""

from __future__ import annotations

import dlp


def test_all_exports_exist_and_are_sorted_uniquely() -> None:
    assert len(set(dlp.__all__)) == len(dlp.__all__)
    for name in dlp.__all__:
        assert hasattr(dlp, name), name


def test_public_names_are_exported() -> None:
    public = {n for n in dir(dlp) if not n.startswith("_")}
    modules = {"cli"}  # submodules imported by tests or by ``python -m``
    assert public - modules - {"annotations"} == set(dlp.__all__)


def test_exported_members_come_from_private_modules_and_have_docs() -> None:
    for name in dlp.__all__:
        member = getattr(dlp, name)
        if callable(member):
            assert member.__module__.startswith("dlp._") or member.__module__ == "dlp", name
            assert member.__doc__, name


def test_errors_are_one_hierarchy_with_codes() -> None:
    for err in (dlp.InvalidObligations, dlp.MalformedBody, dlp.InvalidJson, dlp.DuplicateKey, dlp.BinaryBody):
        assert issubclass(err, dlp.DlpError)
        assert err.code and err.code != dlp.DlpError.code
