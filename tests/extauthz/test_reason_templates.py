"""Reason templates: the parsed-once fast path renders exactly what the formatter renders."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from extauthz.decision import _TEMPLATE, placeholders, render_reason

VARIABLES: dict[str, Any] = {
    "amount": 120.5,
    "channel": "#general",
    "purpose": "support",
    "count": 3,
    "long": "x" * 100,
}


def formatter_render(template: str, variables: dict[str, Any]) -> str:
    """The reference: string.Formatter with Aegis' value rules, no caching."""
    try:
        return _TEMPLATE.vformat(template, (), variables)
    except (ValueError, IndexError, AttributeError):
        return template


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("refund of {amount} is within the limit", "refund of 120.5 is within the limit"),
        ("post to {channel} for {purpose}", "post to #general for support"),
        ("{unknown} stays as written", "{unknown} stays as written"),
        ("{{literal braces}} and {count}", "{literal braces} and 3"),
        ("values are shortened: {long}", "values are shortened: " + "x" * 64),
        ("a broken template {amount", "a broken template {amount"),
        ("a spec {amount:>8}", "a spec    120.5"),
        ("no placeholders", "no placeholders"),
    ],
)
def test_templates_render_as_documented(template, expected):
    assert render_reason(template, VARIABLES) == expected


def test_placeholders_are_the_quoted_names():
    assert placeholders("refund of {amount} to {customer_id}; {{not}} {amount}") == {"amount", "customer_id"}
    assert placeholders("broken {") == frozenset()


pieces = st.sampled_from(
    ["{amount}", "{channel}", "{unknown}", "{", "}", "{{", "}}", "{0}", "{}", "{amount!r}", "text ", "{a.b}", "{long}"]
)


@given(st.lists(pieces, max_size=8).map("".join))
def test_the_fast_path_agrees_with_the_formatter(template):
    assert render_reason(template, VARIABLES) == formatter_render(template, VARIABLES)
