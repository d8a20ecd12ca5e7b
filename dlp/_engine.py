"""One pass over the text that finds every candidate of every pattern, and every context keyword.

Hyperscan (PyPI ``hyperscan``) compiles the whole pattern table into one automaton and scans
the text once, in time linear in its length, reporting each match's leftmost start and every end
offset.  Measured on the 1.6 KB bench ticket (bench/dlp/payload.py): Hyperscan ~27 µs, one Python
``re`` alternation of the same patterns ~650 µs, ``google-re2`` was slower still per match through
its Python binding.  Unlike an alternation, Hyperscan also reports overlapping candidates of
different detectors (a card number that is also a phone-shaped digit run), so validators see them all.

The context keywords (``_context.KEYWORDS``) are compiled into the same database, so the words
that raise or lower a candidate's confidence come out of the same pass as ``Hit`` tuples instead
of a regex run per candidate.  A keyword pattern needs no start of match (its length is known)
and ends one character after the keyword (the non-letter that closes the word).

Where Hyperscan cannot be imported (no wheel for the platform, e.g. ARM) the engine
falls back to Python ``re``: one compiled pattern per table entry, each run with ``finditer``.
The patterns' bounded shapes (see ``_patterns``) keep that linear too; it is slower and may
miss a candidate that overlaps a longer one of the same pattern.  ``ENGINE`` says which is in use.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable

from dlp._context import KEYWORDS, Hit
from dlp._patterns import PATTERNS

Candidate = tuple[int, int, int]  # (pattern index, start, end) in character offsets
# What a scanner returns: (start, -end, pattern index), so that a plain sort orders them by
# start, longest first (tuples compare in C; a key function would cost a call per candidate).
Raw = tuple[int, int, int]
Scanner = Callable[[str], tuple[list[Raw], list[Hit]]]

_N = len(PATTERNS)
_KEYWORD_LENGTHS = tuple(len(k) for k in KEYWORDS)
_EXTENDERS: tuple[re.Pattern[str] | None, ...] = tuple(
    re.compile(p.extend, re.ASCII) if p.extend is not None else None for p in PATTERNS
)
# A left run is matched on the reversed text before the anchor: the longest run is one ``match``.
_LEFT: tuple[re.Pattern[str] | None, ...] = tuple(
    re.compile(f"[{p.left_class}]{{1,{p.left_max}}}", re.ASCII) if p.left_class is not None else None for p in PATTERNS
)


def _keyword_regex(word: str) -> str:
    """A whole-word keyword for Hyperscan: after a non-alphanumeric (or the start), then a non-letter."""
    return rf"(?:^|[^a-z0-9]){re.escape(word)}[^a-z]"


def _map_offsets(data: bytes, raw: list[Raw], hits: list[Hit]) -> tuple[list[Raw], list[Hit]]:
    """Turn UTF-8 byte offsets into character offsets, decoding each stretch once.

    Every pattern starts and ends on an ASCII character, and keyword offsets are the keyword's
    own (ASCII) bounds, so every offset is a character boundary.
    """
    points = sorted({o for s, e, _ in raw for o in (s, -e)} | {o for s, e, _ in hits for o in (s, e)})
    char_at: dict[int, int] = {}
    prev_b = prev_c = 0
    for b in points:
        prev_c += len(data[prev_b:b].decode("utf-8", "surrogatepass"))
        prev_b = b
        char_at[b] = prev_c
    return [(char_at[s], -char_at[-e], i) for s, e, i in raw], [(char_at[s], char_at[e], k) for s, e, k in hits]


def _scan_hyperscan_factory() -> Scanner:
    import hyperscan as hs  # imported here so the fallback works where the wheel is missing

    db = hs.Database(mode=hs.HS_MODE_BLOCK)
    expressions = [p.regex.encode("utf-8") for p in PATTERNS] + [_keyword_regex(k).encode() for k in KEYWORDS]
    flags = [hs.HS_FLAG_SOM_LEFTMOST | (hs.HS_FLAG_CASELESS if p.caseless else 0) for p in PATTERNS]
    flags += [hs.HS_FLAG_CASELESS] * len(KEYWORDS)
    db.compile(expressions=expressions, ids=list(range(len(expressions))), elements=len(expressions), flags=flags)
    # A scratch space may be used by one thread at a time: ext_proc serves streams on a pool.
    local = threading.local()
    lengths = _KEYWORD_LENGTHS

    def scan(text: str) -> tuple[list[Raw], list[Hit]]:
        scratch = getattr(local, "scratch", None)
        if scratch is None:
            scratch = local.scratch = hs.Scratch(db)
        ascii_only = text.isascii()
        data = text.encode("ascii") if ascii_only else text.encode("utf-8", "surrogatepass")
        raw: list[Raw] = []
        hits: list[Hit] = []
        add, hit = raw.append, hits.append

        def on_match(pid: int, start: int, end: int, _flags: int, _ctx: object) -> None:
            if pid < _N:
                add((start, -end, pid))
            else:  # a keyword: it ends one character before the match
                k = pid - _N
                hit((end - 1 - lengths[k], end - 1, k))

        db.scan(data, match_event_handler=on_match, scratch=scratch)
        if hits:
            hits.sort()
        if ascii_only or not (raw or hits):
            return raw, hits
        return _map_offsets(data, raw, hits)

    return scan


def _is_word(ch: str) -> bool:
    return ch.isascii() and (ch.isalnum() or ch == "_")


def _scan_re_factory() -> Scanner:
    compiled = [
        (i, re.compile(p.regex, re.ASCII | (re.IGNORECASE if p.caseless else 0))) for i, p in enumerate(PATTERNS)
    ]
    # Same whole-word rule as the Hyperscan keyword patterns, with look-arounds so that
    # ``finditer`` does not consume the characters around a word.
    keywords = [re.compile(rf"(?<![a-z0-9]){re.escape(k)}(?=[^a-z])", re.ASCII | re.IGNORECASE) for k in KEYWORDS]

    def scan(text: str) -> tuple[list[Raw], list[Hit]]:
        out: list[Raw] = []
        for i, rx in compiled:
            all_ends = PATTERNS[i].all_ends
            for m in rx.finditer(text):
                start, end = m.span()
                out.append((start, -end, i))
                if all_ends:  # shorter matches from the same start, as Hyperscan reports them
                    out.extend(
                        (start, -p, i)
                        for p in range(end - 1, start, -1)
                        if _is_word(text[p - 1]) != _is_word(text[p]) and rx.fullmatch(text, start, p)
                    )
        hits = sorted((m.start(), m.end(), k) for k, rx in enumerate(keywords) for m in rx.finditer(text))
        return out, hits

    return scan


def _load() -> tuple[str, Scanner]:
    try:
        return "hyperscan", _scan_hyperscan_factory()
    except Exception:  # no wheel for this platform, or a CPU Hyperscan cannot run on: fall back
        return "re", _scan_re_factory()


ENGINE, _scan_raw = _load()
scan_re = _scan_re_factory()


def scan_text(text: str, *, scanner: Scanner | None = None) -> tuple[list[Candidate], list[Hit]]:
    """Every candidate in ``text`` (sorted by start then longest first) and every keyword hit.

    Per start, a pattern keeps only its longest match unless it asks for ``all_ends``.  Anchor
    patterns (``extend``) are extended to their value and dropped when no value follows; those
    with ``value_after_anchor`` report only the value; those with a ``left_class`` start where
    the run of those characters before the anchor starts.
    """
    raw, hits = (scanner or _scan_raw)(text)
    out: list[Candidate] = []
    if not raw:
        return out, hits
    raw.sort()
    moved = False
    seen: set[tuple[int, int]] = set()
    append = out.append
    for start, neg_end, pid in raw:
        end = -neg_end
        if _PLAIN[pid]:  # every end reported as it is (most digit patterns): nothing to decide
            append((pid, start, end))
            continue
        if not _ALL_ENDS[pid]:
            if (pid, start) in seen:  # a shorter match of the same pattern at the same start
                continue
            seen.add((pid, start))
        left = _LEFT[pid]
        if left is not None:
            run = left.match(text[max(0, start - _LEFT_MAX[pid]) : start][::-1])
            if run is None:
                continue
            start -= run.end()
            moved = True
        ext = _EXTENDERS[pid]
        if ext is None:
            out.append((pid, start, end))
            continue
        m = ext.match(text, end)
        if m is not None:
            out.append((pid, end if _VALUE_AFTER[pid] else start, m.end()))
    if moved:  # a left run moved a start back
        out.sort(key=_order)
    return out, hits


_ALL_ENDS = tuple(p.all_ends for p in PATTERNS)
_PLAIN = tuple(p.all_ends and p.extend is None and p.left_class is None for p in PATTERNS)
_LEFT_MAX = tuple(p.left_max for p in PATTERNS)
_VALUE_AFTER = tuple(p.value_after_anchor for p in PATTERNS)


def _order(c: Candidate) -> tuple[int, int, int]:
    return c[1], -c[2], c[0]


def candidates(text: str, *, scanner: Scanner | None = None) -> list[Candidate]:
    """Every candidate in ``text``, sorted by start then longest first (see :func:`scan_text`)."""
    return scan_text(text, scanner=scanner)[0]


def native_tables() -> dict[str, object]:
    """The pattern table and the context keywords, JSON-ready, for the compiled engine (dlp/native).

    Each pattern carries its fields as declared in ``_patterns`` plus ``left_bytes``: the ASCII
    code points its ``left_class`` matches under Python ``re`` (the compiled engine checks that it
    reads the class the same way).  ``keywords`` are ``_context.KEYWORDS`` in order (hit index).
    """
    patterns = []
    for p, left in zip(PATTERNS, _LEFT, strict=True):
        patterns.append(
            {
                "detector": p.detector,
                "kind": p.kind,
                "regex": p.regex,
                "caseless": p.caseless,
                "extend": p.extend,
                "all_ends": p.all_ends,
                "value_after_anchor": p.value_after_anchor,
                "left_class": p.left_class,
                "left_max": p.left_max,
                "left_bytes": None if left is None else [c for c in range(128) if left.fullmatch(chr(c))],
            }
        )
    return {"patterns": patterns, "keywords": list(KEYWORDS)}
