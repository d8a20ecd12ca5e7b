"""dlp.redact: JSON structure preservation, modes, fields and paths, formats, errors."""

from __future__ import annotations

import json

import pytest

import dlp

ALL = dlp.Obligations(detectors=("ALL",))
KEY = b"k" * 32

TICKET = {
    "id": 42,
    "customer": {
        "full_name": "Jane Roe",
        "name": "Jane",
        "email": "jane@example.com",
        "ssn": "123-45-6789",
        "dob": "1985-03-12",
        "address": {"street": "1 Main St", "zip": 94103},
    },
    "product": {"name": "Widget", "sku": "123-45-6789", "version": "1.2.3.4"},
    "notes": ["call +1 415-555-0132", "card 4111 1111 1111 1111", None, True, 3.5],
    "created_at": "2024-03-18T09:41:27Z",
}


def redact_json(doc: object, obligations: dlp.Obligations = ALL) -> tuple[object, dlp.Result]:
    result = dlp.redact(json.dumps(doc).encode(), "application/json", obligations)
    return json.loads(result.body), result


def test_json_detectors_and_field_detectors() -> None:
    out, result = redact_json(TICKET)
    assert out == {
        "id": 42,
        "customer": {
            "full_name": "[REDACTED:NAME]",
            "name": "[REDACTED:NAME]",
            "email": "[REDACTED:EMAIL]",
            "ssn": "[REDACTED:SSN]",
            "dob": "[REDACTED:DATE_OF_BIRTH]",
            "address": {"street": "[REDACTED:ADDRESS]", "zip": "[REDACTED:ADDRESS]"},
        },
        "product": {"name": "Widget", "sku": "123-45-6789", "version": "1.2.3.4"},
        "notes": ["call [REDACTED:PHONE]", "card [REDACTED:CREDIT_CARD]", None, True, 3.5],
        "created_at": "2024-03-18T09:41:27Z",
    }
    assert result.changed
    assert result.counts == {
        "NAME": 2,
        "ADDRESS": 2,
        "EMAIL": 1,
        "SSN": 1,
        "DATE_OF_BIRTH": 1,
        "PHONE": 1,
        "CREDIT_CARD": 1,
    }
    locations = {r.location for r in result.findings}
    assert "$.customer.email" in locations and "$.notes[1]" in locations


def test_results_never_carry_values() -> None:
    _, result = redact_json(TICKET)
    text = repr(result.findings) + repr(result.counts)
    for value in ("jane@example.com", "123-45-6789", "4111", "Jane Roe"):
        assert value not in text


def test_unchanged_body_is_returned_as_is() -> None:
    body = b'{ "a" : "nothing here",  "n": 1.50 }'
    result = dlp.redact(body, "application/json", ALL)
    assert result.body is body and not result.changed and result.counts == {}


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (("ssn",), {"ssn": "[REDACTED:SSN]"}),
        (("SSN",), {"ssn": "[REDACTED:SSN]"}),
        (("$.customer.address",), {"address": {"street": "[REDACTED:ADDRESS]", "zip": "[REDACTED:ADDRESS]"}}),
        (("$..dob",), {"dob": "[REDACTED:DATE_OF_BIRTH]"}),
        (("$['customer'].full_name",), {"full_name": "[REDACTED:NAME]"}),
        (("fullName",), {"full_name": "[REDACTED:NAME]"}),
    ],
)
def test_fields_and_paths(fields: tuple[str, ...], expected: dict[str, object]) -> None:
    out, _ = redact_json(TICKET, dlp.Obligations(fields=fields))
    customer = out["customer"]  # type: ignore[index]
    for k, v in expected.items():
        assert customer[k] == v
    untouched = {k: v for k, v in TICKET["customer"].items() if k not in expected}  # type: ignore[attr-defined]
    assert {k: customer[k] for k in untouched} == untouched


def test_path_with_index_and_wildcard() -> None:
    doc = {"items": [{"email": "a@b.co", "n": 1}, {"email": "c@d.co", "n": 2}]}
    out, _ = redact_json(doc, dlp.Obligations(fields=("$.items[*].email",)))
    assert out == {"items": [{"email": "[REDACTED:EMAIL]", "n": 1}, {"email": "[REDACTED:EMAIL]", "n": 2}]}
    out, _ = redact_json(doc, dlp.Obligations(fields=("$.items[1]",)))
    assert out == {"items": [{"email": "a@b.co", "n": 1}, {"email": "[REDACTED:FIELD]", "n": "[REDACTED:FIELD]"}]}


def test_unknown_field_type_is_field() -> None:
    out, result = redact_json({"note": "hello", "pin": 1234}, dlp.Obligations(fields=("note", "pin")))
    assert out == {"note": "[REDACTED:FIELD]", "pin": "[REDACTED:FIELD]"}
    assert result.counts == {"FIELD": 2}


def test_no_obligations_changes_nothing() -> None:
    _, result = redact_json(TICKET, dlp.Obligations())
    assert not result.changed


def test_partial_mode() -> None:
    doc = {
        "card": "4111 1111 1111 1111",
        "ssn": "123-45-6789",
        "email": "jane@example.com",
        "phone": "+1 415-555-0132",
        "iban": "DE89 3704 0044 0532 0130 00",
        "ip": "203.0.113.9",
    }
    out, _ = redact_json(doc, dlp.Obligations(detectors=("ALL",), mode="partial"))
    assert out == {
        "card": "**** **** **** 1111",
        "ssn": "***-**-6789",
        "email": "j***@example.com",
        "phone": "+* ***-***-**32",
        "iban": "DE**…3000",
        "ip": "[REDACTED:IP_ADDRESS]",
    }


def test_hash_mode_is_deterministic_per_key_and_normalised() -> None:
    ob = dlp.Obligations(detectors=("ALL",), mode="hash", hash_key=KEY)
    a, _ = redact_json({"x": "card 4111 1111 1111 1111", "y": "4111111111111111", "e": "Jane@Example.com"}, ob)
    b, _ = redact_json({"e": "jane@example.com"}, ob)
    assert a["x"] == "card " + a["y"]  # type: ignore[index]
    assert a["y"].startswith("[CREDIT_CARD:") and len(a["y"]) == len("[CREDIT_CARD:]") + 12  # type: ignore[index]
    assert a["e"] == b["e"]  # type: ignore[index]
    other = dlp.Obligations(detectors=("ALL",), mode="hash", hash_key=b"z" * 32)
    c, _ = redact_json({"e": "jane@example.com"}, other)
    assert c["e"] != b["e"]  # type: ignore[index]


def test_remove_mode_drops_fields_and_array_elements() -> None:
    doc = {
        "keep": 1,
        "email": "jane@example.com",
        "list": ["ok", "mail jane@example.com", "fine"],
        "customer": {"ssn": "123-45-6789", "tier": "gold"},
    }
    out, result = redact_json(doc, dlp.Obligations(fields=("ssn",), detectors=("EMAIL",), mode="remove"))
    assert out == {"keep": 1, "list": ["ok", "fine"], "customer": {"tier": "gold"}}
    assert result.counts == {"SSN": 1, "EMAIL": 2}


def test_detector_subset() -> None:
    out, _ = redact_json(TICKET, dlp.Obligations(detectors=("EMAIL",)))
    assert out["customer"]["email"] == "[REDACTED:EMAIL]"  # type: ignore[index]
    assert out["customer"]["full_name"] == "Jane Roe"  # type: ignore[index]
    assert out["notes"][1] == "card 4111 1111 1111 1111"  # type: ignore[index]


def test_key_context_raises_and_lowers() -> None:
    doc = {
        "ssn": "123456789",
        "order_id": "123456789",
        "phone": "4155550132",
        "tracking_number": "4155550132",
        "app_version": "10.1.2.3",
        "client_ip": "10.1.2.3",
    }
    out, _ = redact_json(doc)
    assert out == {
        "ssn": "[REDACTED:SSN]",
        "order_id": "123456789",
        "phone": "[REDACTED:PHONE]",
        "tracking_number": "4155550132",
        "app_version": "10.1.2.3",
        "client_ip": "[REDACTED:IP_ADDRESS]",
    }


def test_top_level_scalar_and_array() -> None:
    assert dlp.redact(b'"jane@example.com"', "application/json", ALL).body == b'"[REDACTED:EMAIL]"'
    assert dlp.redact(b'["jane@example.com", 1]', "application/json", ALL).body == b'["[REDACTED:EMAIL]",1]'


def test_unicode_and_lone_surrogates_survive() -> None:
    body = '{"t": "Grüße ✉ jane@example.com", "s": "\\ud800 x"}'.encode()
    result = dlp.redact(body, "application/json; charset=utf-8", ALL)
    assert json.loads(result.body) == {"t": "Grüße ✉ [REDACTED:EMAIL]", "s": "\ud800 x"}


def test_big_numbers_are_kept() -> None:
    body = b'{"n": 123456789012345678901234567890, "e": "jane@example.com", "f": 1e300}'
    out = json.loads(dlp.redact(body, "application/json", ALL).body)
    assert out == {"n": 123456789012345678901234567890, "e": "[REDACTED:EMAIL]", "f": 1e300}


@pytest.mark.parametrize(
    "body",
    [
        b'{"a": 1, "a": 2}',
        b'{"a": {"b": 1, "b": 1}}',
        b'{"a" : 1, "a" : 2}',  # space before the colon (Jackson's pretty printer)
        b'{"a": 1, "a": 2, "s": "x\\":y"}',  # a `":` inside a string must not hide the duplicate
        b'{"name": {"x": 1}, "full_name": "Jane", "full_name": "Joe"}',  # inside a field redacted whole
        b'{"address": {"a": 1, "a": 2}}',  # in a subtree a field rule redacts whole
    ],
)
def test_duplicate_keys_raise(body: bytes) -> None:
    with pytest.raises(dlp.DuplicateKey) as info:
        dlp.redact(body, "application/json", ALL)
    assert info.value.code == "malformed_body"


@pytest.mark.parametrize(
    "body",
    [
        b'{"s": "he said \\"hi\\": jane@example.com"}',  # a `":` inside a string is not a key
        b'{\n  "s" : "jane@example.com",\n  "t" : ["jane@example.com"]\n}',
        b'{"s": "jane@example.com", "n": -9223372036854775809}',  # beyond 64 bits, negative
    ],
)
def test_json_parsed_exactly_whatever_the_layout(body: bytes) -> None:
    out = json.loads(dlp.redact(body, "application/json", ALL).body)
    assert json.dumps(out).count("[REDACTED:EMAIL]") == body.count(b"jane@example.com")
    assert {k: v for k, v in out.items() if not isinstance(v, str | list)} == {
        k: v for k, v in json.loads(body).items() if not isinstance(v, str | list)
    }


@pytest.mark.parametrize("body", [b"{", b"{'a': 1}", b'{"a": NaN}', b"[1,]", b"", b'{"a": 1} x'])
def test_invalid_json_raises(body: bytes) -> None:
    with pytest.raises(dlp.InvalidJson):
        dlp.redact(body, "application/vnd.api+json", ALL)


def test_text_body() -> None:
    result = dlp.redact(b"Mail jane@example.com or call +1 415-555-0132.", "text/plain", ALL)
    assert result.body == b"Mail [REDACTED:EMAIL] or call [REDACTED:PHONE]."
    assert result.counts == {"EMAIL": 1, "PHONE": 1}


def test_text_remove_mode_cuts_values() -> None:
    ob = dlp.Obligations(detectors=("EMAIL",), mode="remove")
    assert dlp.redact(b"a jane@example.com b", "text/plain", ob).body == b"a  b"


def test_form_body() -> None:
    body = b"name=x&email=jane%40example.com&full_name=Jane+Roe&note=call+%2B1+415-555-0132&empty=&flag"
    result = dlp.redact(body, "application/x-www-form-urlencoded", ALL)
    assert result.body == (
        b"name=x&email=[REDACTED:EMAIL]&full_name=[REDACTED:NAME]&note=call+[REDACTED:PHONE]&empty=&flag"
    )
    removed = dlp.redact(body, "application/x-www-form-urlencoded", dlp.Obligations(fields=("email",), mode="remove"))
    assert removed.body == b"name=x&full_name=Jane+Roe&note=call+%2B1+415-555-0132&empty=&flag"


def test_ndjson_body() -> None:
    body = b'{"e": "jane@example.com"}\n\n{"n": 1}\r\n{"t": "ssn 123-45-6789"}\n'
    result = dlp.redact(body, "application/x-ndjson", ALL)
    assert result.body == b'{"e":"[REDACTED:EMAIL]"}\n\n{"n": 1}\r\n{"t":"ssn [REDACTED:SSN]"}\n'
    assert {r.location for r in result.findings} == {"1:$.e", "4:$.t"}
    with pytest.raises(dlp.InvalidJson, match="line 2"):
        dlp.redact(b'{"a": 1}\n{oops}\n', "application/jsonl", ALL)


@pytest.mark.parametrize(
    ("body", "ctype"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00jane@example.com", "image/png"),
        (b"jane@example.com", "application/octet-stream"),
        (b"\xff\xfe bad utf8 jane@example.com", "text/plain"),
        (b'{"a": "\xff jane@example.com"}', "application/json"),
        (b"nul\x00 jane@example.com", ""),
    ],
)
def test_binary_pass_and_block(body: bytes, ctype: str) -> None:
    result = dlp.redact(body, ctype, ALL)
    assert result.body is body and result.binary and not result.changed
    with pytest.raises(dlp.BinaryBody):
        dlp.redact(body, ctype, dlp.Obligations(detectors=("ALL",), on_binary="block"))


def test_declared_charset_is_honoured() -> None:
    body = "Grüße jane@example.com".encode("latin-1")
    result = dlp.redact(body, "text/plain; charset=ISO-8859-1", ALL)
    assert result.body == "Grüße [REDACTED:EMAIL]".encode("latin-1")


def test_unknown_content_type_text_is_scanned() -> None:
    assert dlp.redact(b"jane@example.com", "", ALL).body == b"[REDACTED:EMAIL]"


@pytest.mark.parametrize(
    ("key", "parent", "type_"),
    [
        ("date_of_birth", "", "DATE_OF_BIRTH"),
        ("birthDate", "", "DATE_OF_BIRTH"),
        ("billing_email", "", "EMAIL"),
        ("name", "customers", "NAME"),
        ("name", "product", None),
        ("mac_address", "", None),
        ("ip_address", "", "IP_ADDRESS"),
        ("shipping_address", "", "ADDRESS"),
        ("api_key", "", "SECRET"),
        ("order_id", "", None),
    ],
)
def test_key_hints(key: str, parent: str, type_: str | None) -> None:
    from dlp._context import key_hint

    assert key_hint(key, parent).type == type_


def test_order_id_key_is_lookalike_territory() -> None:
    from dlp._context import key_hint

    assert key_hint("order_id").negative and key_hint("tracking_number").negative
    assert not key_hint("phone_number").negative


def test_partial_text_and_pseudonym_text() -> None:
    ob = dlp.Obligations(detectors=("CREDIT_CARD",), mode="partial")
    assert dlp.redact(b"card 4111-1111-1111-1111.", "text/plain", ob).body == b"card ****-****-****-1111."


def test_form_json_path_field() -> None:
    ob = dlp.Obligations(fields=("$.token",))
    assert dlp.redact(b"token=abc&x=1", "application/x-www-form-urlencoded", ob).body == b"token=[REDACTED:SECRET]&x=1"


@pytest.mark.parametrize("label", ["nope", "base64", "utf-32", "latin-1"])
def test_a_bogus_charset_label_does_not_make_json_unscanned_binary(label):
    # JSON clients read UTF-8 whatever the label says (RFC 8259): so does DLP.
    body = '{"note": "mail jane.doe@example.com — café"}'.encode()
    result = dlp.redact(body, f"application/json; charset={label}", dlp.Obligations(detectors=("EMAIL",)))
    assert not result.binary
    assert b"jane.doe@example.com" not in result.body
    assert json.loads(result.body)["note"] == "mail [REDACTED:EMAIL] — café"


def test_an_unknown_charset_on_text_falls_back_to_utf8():
    result = dlp.redact(
        b"call 555-0100 or mail a@example.org", "text/plain; charset=nope", dlp.Obligations(detectors=("EMAIL",))
    )
    assert not result.binary and b"a@example.org" not in result.body
