"""Seeded, labelled evaluation corpus for dlp (and Presidio): free text and JSON, with hard negatives.

Every sample is ``{"kind": "text"|"json", "text": str, "labels": [...]}``:

* text labels are ``{"type", "start", "end"}`` character spans;
* JSON labels are ``{"type", "path"}``: the JSON path of a string value that holds (or is) PII.

Positives come from Faker (en_US, en_GB, de_DE) or from generators that follow each format's
published rules (NANP/Ofcom/BNetzA test ranges for phones, vendor token formats for secrets).
Hard negatives are look-alikes that must *not* be reported: order ids, tracking numbers, UUIDs,
timestamps, epoch values, prices, version strings, hashes, SSN-shaped SKUs, Luhn-valid references
outside any card IIN range, and dates that are not birth dates.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import string
import uuid
from typing import Any

import phonenumbers
from faker import Faker
from stdnum import luhn

LOCALES = ("en_US", "en_GB", "de_DE")
Sample = dict[str, Any]


class Gen:
    """All value generators, driven by one seeded RNG (and seeded Fakers)."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.fakers = {loc: Faker(loc) for loc in LOCALES}
        for i, f in enumerate(self.fakers.values()):
            f.seed_instance(seed + i)

    def faker(self) -> Faker:
        return self.fakers[self.rng.choice(LOCALES)]

    # --- positives ------------------------------------------------------------------------
    def email(self) -> str:
        return self.faker().email()

    def phone(self) -> str:
        r = self.rng
        area = r.choice(["212", "415", "312", "617", "202", "305", "206", "512", "303", "646"])
        ex, line = r.randint(200, 999), r.randint(0, 9999)
        return r.choice(
            [
                f"+1 {area}-{ex}-{line:04d}",
                f"({area}) {ex}-{line:04d}",
                f"{area}-{ex}-{line:04d}",
                f"+1 ({area}) {ex} {line:04d}",
                f"+44 20 7946 0{r.randint(0, 999):03d}",
                f"07700 900{r.randint(0, 999):03d}",
                f"0161 496 0{r.randint(0, 999):03d}",
                f"+44 {self._uk_mobile()}",
                f"0{self._uk_mobile()}",
                f"+49 30 {r.randint(1000000, 9999999)}",
                f"030 {r.randint(10000000, 99999999)}",
                f"+49 151 {r.randint(10000000, 99999999)}",
                f"0049 89 {r.randint(1000000, 9999999)}",
            ]
        )

    def _uk_mobile(self) -> str:
        """A UK mobile number in an allocated range (the numbering plan, via phonenumbers, is the
        ground truth for "a number someone can have"; Ofcom's drama range 07700 900xxx is not)."""
        while True:
            national = f"7{self.rng.randint(400, 999)} {self.rng.randint(100000, 999999)}"
            if phonenumbers.is_valid_number(phonenumbers.parse("+44" + national.replace(" ", ""))):
                return national

    def ssn(self) -> str:
        value: str = self.fakers["en_US"].ssn()
        return value

    def card(self) -> str:
        # Faker's JCB numbers use prefixes outside 3528-3589, so cards are built from the
        # networks' published IIN ranges and a Luhn check digit.
        r = self.rng
        prefix, length = r.choice(
            [
                (str(4), 16),
                (str(r.randint(51, 55)), 16),
                (str(r.randint(2221, 2720)), 16),
                ("34", 15),
                ("37", 15),
                ("6011", 16),
                ("65", 16),
                (str(r.randint(3528, 3589)), 16),
                ("36", 14),
                (str(4), 13),
            ]
        )
        body = prefix + "".join(r.choice(string.digits) for _ in range(length - len(prefix) - 1))
        number = body + luhn.calc_check_digit(body)
        style = r.random()
        if style < 0.4 or length in (13, 14):
            return number
        if length == 15:
            return f"{number[:4]} {number[4:10]} {number[10:]}"
        sep = " " if style < 0.8 else "-"
        return sep.join(number[i : i + 4] for i in range(0, len(number), 4))

    def iban(self) -> str:
        value: str = self.fakers[self.rng.choice(["en_GB", "de_DE"])].iban()
        if self.rng.random() < 0.5:
            return " ".join(value[i : i + 4] for i in range(0, len(value), 4))
        return value

    def ip(self) -> str:
        f = self.faker()
        return str(f.ipv4_public() if self.rng.random() < 0.7 else f.ipv6())

    def dob(self) -> str:
        d = self.faker().date_of_birth(minimum_age=18, maximum_age=90)
        return self.rng.choice([d.isoformat(), d.strftime("%d/%m/%Y"), d.strftime("%d.%m.%Y"), d.strftime("%B %d, %Y")])

    def secret(self) -> str:
        r = self.rng
        up, alnum = string.ascii_uppercase + string.digits, string.ascii_letters + string.digits

        def pick(chars: str, n: int) -> str:
            return "".join(r.choice(chars) for _ in range(n))

        kind = r.randrange(6)
        if kind == 0:
            return "AKIA" + pick(up, 16)
        if kind == 1:
            return "ghp_" + pick(alnum, 36)
        if kind == 2:
            return f"xoxb-{r.randint(10**10, 10**11)}-{pick(alnum, 24)}"
        if kind == 3:
            return "sk_live_" + pick(alnum, 24)
        if kind == 4:
            head = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=").decode()
            body = base64.urlsafe_b64encode(json.dumps({"sub": pick(alnum, 8)}).encode()).rstrip(b"=").decode()
            return f"{head}.{body}.{pick(alnum + '-_', 43)}"
        lines = "\n".join(pick(alnum + "+/", 64) for _ in range(4))
        return f"-----BEGIN RSA PRIVATE KEY-----\n{lines}\n-----END RSA PRIVATE KEY-----"

    # --- hard negatives -------------------------------------------------------------------
    def lookalike(self) -> tuple[str, str]:
        """(context word, value) of something that must not be redacted."""
        r = self.rng
        ref = "".join(r.choice(string.digits) for _ in range(15))
        ref = r.choice("1789") + ref[1:]
        ref = ref + luhn.calc_check_digit(ref)  # Luhn-valid, but no card network starts with 1/7/8x/9x
        if ref[0] == "8" and ref[1] in "12":
            ref = "7" + ref[1:-1] + luhn.calc_check_digit("7" + ref[1:-1])
        choices = [
            ("order", f"ORD-{r.randint(2019, 2025)}-{r.randint(100000, 999999)}"),
            ("order number", str(r.randint(10**9, 10**10 - 1))),
            ("tracking number", "1Z" + "".join(r.choice(string.ascii_uppercase + string.digits) for _ in range(16))),
            ("tracking", " ".join(str(r.randint(1000, 9999)) for _ in range(5)) + " 00"),
            ("request id", str(uuid.UUID(int=r.getrandbits(128)))),
            (
                "created at",
                f"{r.randint(2019, 2025)}-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}"
                f"T{r.randint(0, 23):02d}:{r.randint(0, 59):02d}:00Z",
            ),
            ("epoch", str(r.randint(1_500_000_000, 1_800_000_000))),
            ("epoch ms", str(r.randint(1_500_000_000_000, 1_800_000_000_000))),
            ("total", f"${r.randint(1, 99999)}.{r.randint(0, 99):02d}"),
            ("version", f"{r.randint(1, 20)}.{r.randint(0, 20)}.{r.randint(0, 20)}.{r.randint(0, 999)}"),
            ("sha256", hashlib.sha256(str(r.random()).encode()).hexdigest()),
            ("commit", hashlib.sha1(str(r.random()).encode()).hexdigest()),
            ("SKU", f"{r.randint(100, 899)}-{r.randint(10, 99)}-{r.randint(1000, 9999)}"),
            ("reference", ref),
            ("invoice date", f"{r.randint(1, 28):02d}/{r.randint(1, 12):02d}/{r.randint(2015, 2024)}"),
            ("delivered on", f"{r.randint(2015, 2024)}-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}"),
            ("at", f"{r.randint(0, 23):02d}:{r.randint(0, 59):02d}:{r.randint(0, 59):02d}"),
            ("mac", ":".join(f"{r.randint(0, 255):02x}" for _ in range(6))),
        ]
        return r.choice(choices)


TEMPLATES = {
    "EMAIL": ["Please reply to {v} when you can.", "contact: {v}", "{v}", "cc {v} on the thread"],
    "PHONE": ["Call me at {v} after 5pm.", "phone: {v}", "My number is {v}.", "Tel. {v}", "mobile {v}"],
    "SSN": ["My SSN is {v}.", "social security number {v}", "SSN: {v}"],
    "CREDIT_CARD": ["card number {v} exp 04/27", "Charge my Visa {v} please.", "{v}", "cc: {v}"],
    "IBAN": ["Please wire it to {v}.", "IBAN: {v}", "Bankverbindung {v}"],
    "IP_ADDRESS": ["login from {v} failed", "client ip {v}", "blocked {v}"],
    "DATE_OF_BIRTH": ["I was born on {v}.", "DOB: {v}", "date of birth {v}", "geboren am {v}"],
    "SECRET": ["token {v}", "here is the key {v} don't share", "{v}"],
}
GENERATORS = {
    "EMAIL": "email",
    "PHONE": "phone",
    "SSN": "ssn",
    "CREDIT_CARD": "card",
    "IBAN": "iban",
    "IP_ADDRESS": "ip",
    "DATE_OF_BIRTH": "dob",
    "SECRET": "secret",
}


def _text_sample(g: Gen) -> Sample:
    parts: list[str] = []
    labels: list[dict[str, Any]] = []
    pos = 0
    for _ in range(g.rng.randint(1, 4)):
        if g.rng.random() < 0.45:
            word, value = g.lookalike()
            chunk = f"The {word} is {value}."
            parts.append(chunk)
        else:
            typ = g.rng.choice(list(TEMPLATES))
            value = getattr(g, GENERATORS[typ])()
            template = g.rng.choice(TEMPLATES[typ])
            chunk = template.format(v=value)
            start = pos + template.index("{v}")
            labels.append({"type": typ, "start": start, "end": start + len(value)})
            parts.append(chunk)
        pos += len(chunk) + 1
    return {"kind": "text", "text": " ".join(parts), "labels": labels}


def _json_sample(g: Gen) -> Sample:
    f = g.faker()
    labels: list[dict[str, Any]] = []

    def lab(typ: str, path: str) -> None:
        labels.append({"type": typ, "path": path})

    customer: dict[str, Any] = {
        "id": g.rng.randint(1000, 99999),
        "full_name": f.name(),
        "email": g.email(),
        "phone": g.phone(),
        "date_of_birth": g.dob(),
        "address": {"street": f.street_address(), "city": f.city(), "postcode": f.postcode()},
        "tier": g.rng.choice(["gold", "silver"]),
    }
    for k, t in (("full_name", "NAME"), ("email", "EMAIL"), ("phone", "PHONE"), ("date_of_birth", "DATE_OF_BIRTH")):
        lab(t, f"$.customer.{k}")
    for k in ("street", "city", "postcode"):
        lab("ADDRESS", f"$.customer.address.{k}")
    if g.rng.random() < 0.5:
        customer["ssn"] = g.ssn()
        lab("SSN", "$.customer.ssn")
    if g.rng.random() < 0.5:
        customer["iban"] = g.iban()
        lab("IBAN", "$.customer.iban")
    word, value = g.lookalike()
    order = {
        "order_id": f"ORD-{g.rng.randint(10000, 99999)}",
        "sku": f"{g.rng.randint(100, 899)}-{g.rng.randint(10, 99)}-{g.rng.randint(1000, 9999)}",
        "total": round(g.rng.random() * 500, 2),
        "note": f"{word} {value}",
        "shipped_at": f"2024-0{g.rng.randint(1, 9)}-1{g.rng.randint(0, 9)}",
        "app_version": "5.12.0.3",
    }
    message = _text_sample(g)
    for label in message["labels"]:
        lab(label["type"], "$.messages[0].body")
    doc = {
        "ticket_id": str(uuid.UUID(int=g.rng.getrandbits(128))),
        "customer": customer,
        "order": order,
        "messages": [{"from": "customer", "body": message["text"]}],
        "client": {"ip": g.ip()} if g.rng.random() < 0.5 else {"ua": "Mozilla/5.0 Chrome/120.0.6099.109"},
    }
    if "ip" in doc["client"]:
        lab("IP_ADDRESS", "$.client.ip")
    return {"kind": "json", "text": json.dumps(doc, ensure_ascii=False), "labels": labels}


def generate(n: int = 1500, seed: int = 20240318) -> list[Sample]:
    """``n`` samples (two thirds free text, one third JSON), deterministic for a seed."""
    g = Gen(seed)
    return [_json_sample(g) if i % 3 == 2 else _text_sample(g) for i in range(n)]


if __name__ == "__main__":
    import sys

    for sample in generate(int(sys.argv[1]) if len(sys.argv) > 1 else 20):
        print(json.dumps(sample, ensure_ascii=False))
