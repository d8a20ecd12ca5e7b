"""One pass over the text that finds every candidate of every pattern.

Hyperscan (PyPI ``hyperscan``) compiles the whole pattern table into one automaton and scans
the text once, in time linear in its length, reporting each match's leftmost start and every end
offset.  Measured on the 1.6 KB bench ticket (bench/dlp/payload.py): Hyperscan ~27 µs, one Python
``re`` alternation of the same patterns ~650 µs, ``google-re2`` was slower still per match through
its Python binding.  Unlike an alternation, Hyperscan also reports overlapping candidates of
different detectors (a card number that is also a phone-shaped digit run), so validators see them all.

Where Hyperscan cannot be imported (no wheel for the platform, e.g. ARM) the engine
falls back to Python ``re``: one compiled pattern per table entry, each run with ``finditer``.
The patterns' bounded shapes (see ``_patterns``) keep that linear too; it is slower and may
miss a candidate that overlaps a longer one of the same pattern.  ``ENGINE`` says which is in use.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable

from dlp._patterns import PATTERNS

Candidate = tuple[int, int, int]  # (pattern index, start, end) in character offsets

_EXTENDERS: tuple[re.Pattern[str] | None, ...] = tuple(
    re.compile(p.extend, re.ASCII) if p.extend is not None else None for p in PATTERNS
)


def _map_offsets(data: bytes, raw: list[Candidate]) -> list[Candidate]:
    """Turn UTF-8 byte offsets into character offsets, decoding each stretch once.

    Every pattern starts and ends on an ASCII character, so every offset is a character boundary.
    """
    points = sorted({o for _, s, e in raw for o in (s, e)})
    char_at: dict[int, int] = {}
    prev_b = prev_c = 0
    for b in points:
        prev_c += len(data[prev_b:b].decode("utf-8", "surrogatepass"))
        prev_b = b
        char_at[b] = prev_c
    return [(i, char_at[s], char_at[e]) for i, s, e in raw]


def _scan_hyperscan_factory() -> Callable[[str], list[Candidate]]:
    import hyperscan as hs  # imported here so the fallback works where the wheel is missing

    db = hs.Database(mode=hs.HS_MODE_BLOCK)
    flags = [hs.HS_FLAG_SOM_LEFTMOST | (hs.HS_FLAG_CASELESS if p.caseless else 0) for p in PATTERNS]
    db.compile(
        expressions=[p.regex.encode("utf-8") for p in PATTERNS],
        ids=list(range(len(PATTERNS))),
        elements=len(PATTERNS),
        flags=flags,
    )
    # A scratch space may be used by one thread at a time: ext_proc serves streams on a pool.
    local = threading.local()

    def on_match(pid: int, start: int, end: int, _flags: int, out: object) -> None:
        out.append((pid, start, end))  # type: ignore[attr-defined]  # ``out`` is the list passed as context

    def scan(text: str) -> list[Candidate]:
        scratch = getattr(local, "scratch", None)
        if scratch is None:
            scratch = local.scratch = hs.Scratch(db)
        ascii_only = text.isascii()
        data = text.encode("ascii") if ascii_only else text.encode("utf-8", "surrogatepass")
        raw: list[Candidate] = []
        db.scan(data, match_event_handler=on_match, context=raw, scratch=scratch)
        if not raw or ascii_only:
            return raw
        return _map_offsets(data, raw)

    return scan


def _is_word(ch: str) -> bool:
    return ch.isascii() and (ch.isalnum() or ch == "_")


def _scan_re_factory() -> Callable[[str], list[Candidate]]:
    compiled = [
        (i, re.compile(p.regex, re.ASCII | (re.IGNORECASE if p.caseless else 0))) for i, p in enumerate(PATTERNS)
    ]

    def scan(text: str) -> list[Candidate]:
        out: list[Candidate] = []
        for i, rx in compiled:
            all_ends = PATTERNS[i].all_ends
            for m in rx.finditer(text):
                start, end = m.span()
                out.append((i, start, end))
                if all_ends:  # shorter matches from the same start, as Hyperscan reports them
                    out.extend(
                        (i, start, p)
                        for p in range(end - 1, start, -1)
                        if _is_word(text[p - 1]) != _is_word(text[p]) and rx.fullmatch(text, start, p)
                    )
        return out

    return scan


def _load() -> tuple[str, Callable[[str], list[Candidate]]]:
    try:
        return "hyperscan", _scan_hyperscan_factory()
    except Exception:  # no wheel for this platform, or a CPU Hyperscan cannot run on: fall back
        return "re", _scan_re_factory()


ENGINE, _scan_raw = _load()
scan_re = _scan_re_factory()


def candidates(text: str, *, scanner: Callable[[str], list[Candidate]] | None = None) -> list[Candidate]:
    """Every candidate in ``text``, sorted by start then longest first.

    Per start, a pattern keeps only its longest match unless it asks for ``all_ends``.  Anchor
    patterns (``extend``) are extended to their value and dropped when no value follows; those
    with ``value_after_anchor`` report only the value.
    """
    raw = (scanner or _scan_raw)(text)
    out: list[Candidate] = []
    seen: set[tuple[int, int]] = set()
    for pid, start, end in sorted(raw, key=lambda c: (c[1], -c[2], c[0])):
        pattern = PATTERNS[pid]
        if not pattern.all_ends:
            if (pid, start) in seen:
                continue
            seen.add((pid, start))
        ext = _EXTENDERS[pid]
        if ext is None:
            out.append((pid, start, end))
            continue
        m = ext.match(text, end)
        if m is not None:
            out.append((pid, end if pattern.value_after_anchor else start, m.end()))
    return out
