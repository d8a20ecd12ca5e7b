"""Date parsing for DATE_OF_BIRTH candidates: numeric (ISO, D/M/Y, M/D/Y) and English/German month names.

Only plausible birth dates parse: year 1900 to this year, not in the future.  Ambiguous
numeric dates (``03/04/1985``) parse if either day-month order is a real date.
"""

from __future__ import annotations

import datetime as dt
import re
import time

MIN_YEAR = 1900

_MONTHS = {
    "jan": 1,
    "feb": 2,
    "mar": 3,
    "mär": 3,
    "mae": 3,
    "apr": 4,
    "may": 5,
    "mai": 5,
    "jun": 6,
    "jul": 7,
    "aug": 8,
    "sep": 9,
    "oct": 10,
    "okt": 10,
    "nov": 11,
    "dec": 12,
    "dez": 12,
}
_NUMBERS = re.compile(r"\d{1,4}", re.ASCII)
_WORD = re.compile(r"[a-zäA-ZÄ]{3,}")


_today: tuple[dt.date, float] = (dt.date.min, 0.0)  # (today, the epoch second it stops being today)


def _current_date() -> dt.date:
    """``date.today()``, recomputed only when the day has changed (it costs a clock and tz read)."""
    global _today
    today, until = _today
    now = time.time()
    if now >= until:
        today = dt.date.today()
        midnight = dt.datetime.combine(today + dt.timedelta(days=1), dt.time())
        _today = today, midnight.timestamp()
    return today


def reference_date() -> dt.date:
    """The day dates are judged against (a date of birth is never after it): what a text
    redacts to may change when it does."""
    return _current_date()


def _make(year: int, month: int, day: int) -> dt.date | None:
    today = _current_date()
    if year < 100:  # two-digit year: the most recent past century year
        year += 2000 if year <= today.year % 100 else 1900
    try:
        value = dt.date(year, month, day)
    except ValueError:
        return None
    return value if year >= MIN_YEAR and value <= today else None


def parse_date(value: str, kind: str) -> dt.date | None:
    """The date ``value`` denotes, if it is a plausible birth date; ``kind`` is the pattern kind."""
    nums = [int(n) for n in _NUMBERS.findall(value)]
    if kind == "iso":
        return _make(nums[0], nums[1], nums[2]) if len(nums) == 3 else None
    if kind == "dmy":
        if len(nums) != 3:
            return None
        return _make(nums[2], nums[1], nums[0]) or _make(nums[2], nums[0], nums[1])
    word = _WORD.search(value.replace(" of ", " ").replace(" OF ", " "))
    if word is None or len(nums) != 2:
        return None
    month = _MONTHS.get(word.group(0)[:3].lower())
    if month is None:
        return None
    return _make(nums[1], month, nums[0])


def native_tables() -> dict[str, object]:
    """The data of ``parse_date`` for ``dlp/native`` (``validate.rs``): month names, the year floor,
    and the two regexes the compiled core implements by hand (it checks they are unchanged)."""
    return {"months": dict(_MONTHS), "min_year": MIN_YEAR, "numbers": _NUMBERS.pattern, "word": _WORD.pattern}
