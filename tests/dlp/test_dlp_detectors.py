"""Per-detector tables: positives, look-alike negatives, boundaries, unicode."""

from __future__ import annotations

import pytest

import dlp


def found(text: str, **kw: object) -> list[tuple[str, str]]:
    return [(f.type, text[f.start : f.end]) for f in dlp.scan(text, **kw)]  # type: ignore[arg-type]


POSITIVES = [
    # EMAIL
    ("contact jane.doe@example.com today", "EMAIL", "jane.doe@example.com"),
    ("mail: o'brien+tag@mail.example.co.uk.", "EMAIL", "o'brien+tag@mail.example.co.uk"),
    ("<JOHN_SMITH@EXAMPLE.ORG>", "EMAIL", "JOHN_SMITH@EXAMPLE.ORG"),
    # PHONE
    ("call +1 415-555-0132 now", "PHONE", "+1 415-555-0132"),
    ("Tel: +44 20 7946 0958", "PHONE", "+44 20 7946 0958"),
    ("ruf an: +49 30 901820", "PHONE", "+49 30 901820"),
    ("phone (415) 555-0132", "PHONE", "(415) 555-0132"),
    ("mobile 07700 900123", "PHONE", "07700 900123"),
    ("Telefon 030 901820", "PHONE", "030 901820"),
    ("phone: 4155550132", "PHONE", "4155550132"),
    ("tel:+14155550132", "PHONE", "+14155550132"),
    ("0044 20 7946 0958", "PHONE", "0044 20 7946 0958"),
    # SSN
    ("SSN 123-45-6789", "SSN", "123-45-6789"),
    ("my social security number is 123 45 6789", "SSN", "123 45 6789"),
    ("ssn: 123456789", "SSN", "123456789"),
    # CREDIT_CARD
    ("visa 4111 1111 1111 1111", "CREDIT_CARD", "4111 1111 1111 1111"),
    ("card 5555-5555-5555-4444", "CREDIT_CARD", "5555-5555-5555-4444"),
    ("mc 2221000000000009", "CREDIT_CARD", "2221000000000009"),
    ("mc 2720990000000007", "CREDIT_CARD", "2720990000000007"),
    ("amex 3782 822463 10005", "CREDIT_CARD", "3782 822463 10005"),
    ("discover 6011111111111117", "CREDIT_CARD", "6011111111111117"),
    ("jcb 3530111333300000", "CREDIT_CARD", "3530111333300000"),
    ("diners 3056 9309 0259 04", "CREDIT_CARD", "3056 9309 0259 04"),
    ("unionpay 6200000000000005", "CREDIT_CARD", "6200000000000005"),
    # IBAN
    ("IBAN DE89 3704 0044 0532 0130 00 thanks", "IBAN", "DE89 3704 0044 0532 0130 00"),
    ("GB82WEST12345698765432", "IBAN", "GB82WEST12345698765432"),
    ("pay to FR1420041010050500013M02606", "IBAN", "FR1420041010050500013M02606"),
    # IP_ADDRESS
    ("from 203.0.113.42:443", "IP_ADDRESS", "203.0.113.42"),
    ("client 2001:db8::8a2e:370:7334", "IP_ADDRESS", "2001:db8::8a2e:370:7334"),
    ("ip 1.2.3.4", "IP_ADDRESS", "1.2.3.4"),
    # DATE_OF_BIRTH
    ("born on 12/03/1985 in Leeds", "DATE_OF_BIRTH", "12/03/1985"),
    ("DOB: 1985-03-12", "DATE_OF_BIRTH", "1985-03-12"),
    ("date of birth: March 12, 1985", "DATE_OF_BIRTH", "March 12, 1985"),
    ("geboren am 12. März 1985", "DATE_OF_BIRTH", "12. März 1985"),
    ("birthday 3rd of May 1990", "DATE_OF_BIRTH", "3rd of May 1990"),
    # SECRET
    ("key AKIAIOSFODNN7EXAMPLE", "SECRET", "AKIAIOSFODNN7EXAMPLE"),
    ("token ghp_" + "a" * 20 + "B" * 16 + " ok", "SECRET", "ghp_" + "a" * 20 + "B" * 16),
    ("slack xoxb-1234567890-abcdefghij", "SECRET", "xoxb-1234567890-abcdefghij"),
    ("stripe sk_live_4eC39HqLyjWDarjtT1zdp7dc", "SECRET", "sk_live_4eC39HqLyjWDarjtT1zdp7dc"),
    (
        "auth eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
        "SECRET",
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    ),
    ('config api_key="Zk3p9Q2mX8vL1nB4"', "SECRET", "Zk3p9Q2mX8vL1nB4"),
    ("PASSWORD=CorrectHorse42!", "SECRET", "CorrectHorse42!"),
]


@pytest.mark.parametrize(("text", "type_", "value"), POSITIVES)
def test_positive(text: str, type_: str, value: str) -> None:
    assert (type_, value) in found(text)


def test_private_key_block_is_one_finding() -> None:
    block = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7\nabc+/=\n-----END RSA PRIVATE KEY-----"
    text = f"key:\n{block}\nend"
    assert found(text) == [("SECRET", block)]


NEGATIVES = [
    # look-alikes that must not be reported at all
    "order ORD-2024-4111111111111111 shipped",
    "tracking number 1Z999AA10123456784",
    "UPS 9400 1000 0000 0000 0000 00",
    "request 3f2a9c1b-7d4e-4b8a-9c1d-2e3f4a5b6c7d",
    "created 2024-03-18T09:41:27Z",
    "at 09:41:27 on 2024-03-18",
    "epoch 1710754887",
    "ts 1710754887123",
    "price $1299.99 or EUR 4111.50",
    "version 1.2.3.4",
    "app v1.2.3.4 (build 5.12.0.3)",
    "Mozilla/5.0 Chrome/120.0.6099.109 Safari/537.36",
    "OID 1.3.6.1.4.1.311",
    "sha256 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    "md5 d41d8cd98f00b204e9800998ecf8427e",
    "SKU 123-45-6789",
    "part number 123-45-6789",
    "ref 1234567812345670",  # Luhn-valid, not in an IIN range
    "card 4111 1111 1111 1112",  # Luhn-invalid
    "ssn 000-12-3456",
    "ssn 666-12-3456",
    "ssn 912-12-3456",
    "ssn 123-00-4567",
    "ssn 123-45-0000",
    "ssn 078-05-1120",
    "ssn 219-09-9999",
    "IBAN DE89 3704 0044 0532 0130 01",  # bad check digits
    "invoice date 12/03/2023",
    "delivered on 1985-03-12",
    "mac 00:1a:2b:3c:4d:5e",
    "std::vector<int>",
    "logo@2x.png",
    "see user@localhost",
    "api_key=xxxxxxxx",
    "password: changeme",
    "phone 123",
    "call 555-0100",  # too short for any plan
    "qty 12 34 56 78",
]


@pytest.mark.parametrize("text", NEGATIVES)
def test_negative(text: str) -> None:
    assert found(text) == []


def test_loopback_and_unspecified_ips_are_below_threshold() -> None:
    assert found("listen 127.0.0.1 and 0.0.0.0 and ::1") == []


def test_version_context_is_not_an_ip_but_plain_dotted_quad_is() -> None:
    assert found("version 1.2.3.4") == []
    assert found("host 1.2.3.4") == [("IP_ADDRESS", "1.2.3.4")]


def test_date_needs_birth_context() -> None:
    assert found("meeting on 12/03/1985") == []
    assert found("born 12/03/1985") == [("DATE_OF_BIRTH", "12/03/1985")]
    assert found("born 12/03/2999") == []  # future dates are not birth dates


def test_bare_digits_need_context() -> None:
    assert found("id 4155550132") == []
    assert found("ssn 123456789") == [("SSN", "123456789")]
    assert found("value 123456789") == []


def test_offsets_are_character_offsets_with_unicode() -> None:
    text = "Ünïcödé ✉ jane@example.com — 📞 +44 20 7946 0958"
    got = dlp.scan(text)
    assert [(f.type, text[f.start : f.end]) for f in got] == [
        ("EMAIL", "jane@example.com"),
        ("PHONE", "+44 20 7946 0958"),
    ]


def test_non_ascii_digits_are_not_numbers() -> None:
    assert found("ssn ١٢٣-٤٥-٦٧٨٩") == []


def test_detector_filter_and_thresholds() -> None:
    text = "jane@example.com 4111 1111 1111 1111"
    assert found(text, detectors=["EMAIL"]) == [("EMAIL", "jane@example.com")]
    assert found(text, detectors=["credit_card"]) == [("CREDIT_CARD", "4111 1111 1111 1111")]
    assert found(text, thresholds={"EMAIL": 1.0}) == [("CREDIT_CARD", "4111 1111 1111 1111")]
    assert found("value 123456789", thresholds={"SSN": 0.2}) == [("SSN", "123456789")]


def test_unknown_detector_is_a_typed_error() -> None:
    with pytest.raises(dlp.UnknownDetector):
        dlp.scan("x", detectors=["PASSPORT"])
    with pytest.raises(dlp.UnknownDetector):
        dlp.scan("x", thresholds={"EMAIL": 2})


def test_findings_are_frozen_sorted_and_non_overlapping() -> None:
    text = "a@b.co 4111111111111111 +1 415-555-0132 123-45-6789 10.0.0.1"
    got = dlp.scan(text)
    assert got == sorted(got, key=lambda f: f.start)
    assert all(a.end <= b.start for a, b in zip(got, got[1:], strict=False))
    with pytest.raises(AttributeError):
        got[0].start = 3  # type: ignore[misc]


def test_multiple_values_in_one_text() -> None:
    text = "a: jane@example.com, b: john@example.org; cards 4111111111111111 and 5555555555554444"
    assert [t for t, _ in found(text)] == ["EMAIL", "EMAIL", "CREDIT_CARD", "CREDIT_CARD"]


def test_empty_text() -> None:
    assert dlp.scan("") == []
