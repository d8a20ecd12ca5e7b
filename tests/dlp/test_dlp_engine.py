"""The multi-pattern engine: the compiled core runs here, and in the Python path Hyperscan and the
``re`` fallback agree on what ``scan`` reports."""

from __future__ import annotations

import pytest
from test_dlp_detectors import NEGATIVES, POSITIVES

import dlp
from dlp import _engine, _native


def test_engine_is_the_compiled_core_here() -> None:
    assert dlp.ENGINE == "native"  # `make install` builds it; without it dlp runs in Python
    assert _engine.ENGINE == "hyperscan"  # the Python path's engine


@pytest.mark.parametrize("text", [p[0] for p in POSITIVES] + NEGATIVES)
def test_fallback_agrees(text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_native, "core", lambda: None)
    expected = dlp.scan(text)
    monkeypatch.setattr(_engine, "_scan_raw", _engine.scan_re)
    assert dlp.scan(text) == expected


def test_non_ascii_offsets_are_mapped() -> None:
    text = "é" * 3 + " jane@example.com " + "漢字" + " 4111111111111111"
    raw = _engine.candidates(text)
    spans = {text[s:e] for _, s, e in raw}
    assert "jane@example.com" in spans and "4111111111111111" in spans


def test_concurrent_scans_use_their_own_scratch() -> None:
    from concurrent.futures import ThreadPoolExecutor

    texts = [f"mail user{i}@example.com card 4111 1111 1111 1111 ip 203.0.113.{i % 250}" for i in range(200)]
    expected = [dlp.scan(t) for t in texts]
    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(pool.map(dlp.scan, texts))
    assert got == expected
