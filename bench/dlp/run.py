"""dlp benchmark: precision/recall per detector, MB/s, redact latency, side by side with Presidio.

    .venv/bin/python bench/dlp/run.py            # print the report
    .venv/bin/python bench/dlp/run.py --write    # also write bench/dlp/RESULTS.md

Presidio (``presidio-analyzer``) runs in the same process on the same corpus and payload with
its ``NoOpNlpEngine`` (no spaCy model: only its pattern recognizers).  If it cannot be imported
or run, the report says why and shows dlp alone.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path[:0] = [str(ROOT), str(HERE)]

from corpus import generate  # noqa: E402
from payload import ticket_bytes  # noqa: E402

import dlp  # noqa: E402

TYPES = ("EMAIL", "PHONE", "SSN", "CREDIT_CARD", "IBAN", "IP_ADDRESS", "DATE_OF_BIRTH", "SECRET", "NAME", "ADDRESS")
# Presidio entity → dlp type.  DATE_TIME is Presidio's only date entity (it has no birth-date notion).
PRESIDIO_MAP = {
    "EMAIL_ADDRESS": "EMAIL",
    "PHONE_NUMBER": "PHONE",
    "US_SSN": "SSN",
    "CREDIT_CARD": "CREDIT_CARD",
    "IBAN_CODE": "IBAN",
    "IP_ADDRESS": "IP_ADDRESS",
    "DATE_TIME": "DATE_OF_BIRTH",
}
ALL = dlp.Obligations(detectors=("ALL",))


class Tally:
    """Per-type counts of predictions matched, predictions, gold labels matched, gold labels."""

    def __init__(self) -> None:
        self.c: Counter[tuple[str, str]] = Counter()

    def add_text(self, preds: list[tuple[str, int, int]], gold: list[dict[str, Any]]) -> None:
        for t, s, e in preds:
            self.c[t, "pred"] += 1
            self.c[t, "pred_ok"] += any(g["type"] == t and s < g["end"] and g["start"] < e for g in gold)
        for g in gold:
            self.c[g["type"], "gold"] += 1
            self.c[g["type"], "gold_ok"] += any(g["type"] == t and s < g["end"] and g["start"] < e for t, s, e in preds)

    def add_set(self, preds: set[tuple[str, str]], gold: set[tuple[str, str]]) -> None:
        for p in preds:
            self.c[p[0], "pred"] += 1
            self.c[p[0], "pred_ok"] += p in gold
        for g in gold:
            self.c[g[0], "gold"] += 1
            self.c[g[0], "gold_ok"] += g in preds

    def pr(self, t: str) -> tuple[float | None, float | None]:
        pred, gold = self.c[t, "pred"], self.c[t, "gold"]
        p = self.c[t, "pred_ok"] / pred if pred else None
        r = self.c[t, "gold_ok"] / gold if gold else None
        return p, r


def leaves(doc: Any, path: str = "$", key: str = "") -> Iterator[tuple[str, str, str]]:
    """(path, key, string) of every string value, in the same path syntax as dlp's locations."""
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from leaves(v, f"{path}.{k}", k)
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from leaves(v, f"{path}[{i}]", key)
    elif isinstance(doc, str):
        yield path, key, doc


def run_dlp(corpus: list[dict[str, Any]]) -> tuple[Tally, float]:
    tally, t0 = Tally(), time.perf_counter()
    for s in corpus:
        if s["kind"] == "text":
            tally.add_text([(f.type, f.start, f.end) for f in dlp.scan(s["text"])], s["labels"])
        else:
            result = dlp.redact(s["text"].encode(), "application/json", ALL)
            tally.add_set(
                {(r.type, r.location) for r in result.findings}, {(g["type"], g["path"]) for g in s["labels"]}
            )
    return tally, time.perf_counter() - t0


def load_presidio() -> tuple[Callable[..., Any] | None, str]:
    """Presidio's analyze function with pattern recognizers only, or None and the reason."""
    logging.getLogger("tldextract").setLevel(logging.CRITICAL)  # it tries to fetch a suffix list (no network)
    logging.getLogger("presidio-analyzer").setLevel(logging.ERROR)
    try:
        from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
        from presidio_analyzer.nlp_engine.no_op_nlp_engine import NoOpNlpEngine

        nlp = NoOpNlpEngine(models=[{"lang_code": "en", "model_name": "none"}])
        nlp.load()
        registry = RecognizerRegistry(supported_languages=["en"])
        registry.load_predefined_recognizers(languages=["en"], nlp_engine=nlp)
        engine = AnalyzerEngine(registry=registry, nlp_engine=nlp, supported_languages=["en"])
        engine.analyze("warm up jane@example.com", language="en")
    except Exception as exc:  # report any failure verbatim: the comparison is optional
        return None, f"presidio unavailable: {type(exc).__name__}: {exc}"
    from importlib.metadata import version as dist_version

    version = dist_version("presidio-analyzer")
    return (
        engine.analyze,
        f"presidio-analyzer {version}, NoOpNlpEngine, {len(registry.recognizers)} pattern recognizers",
    )


def run_presidio(analyze: Callable[..., Any], corpus: list[dict[str, Any]]) -> tuple[Tally, float]:
    tally, t0 = Tally(), time.perf_counter()
    for s in corpus:
        if s["kind"] == "text":
            preds = [
                (PRESIDIO_MAP[r.entity_type], r.start, r.end)
                for r in analyze(s["text"], language="en")
                if r.entity_type in PRESIDIO_MAP
            ]
            tally.add_text(preds, s["labels"])
        else:
            found = set()
            for path, key, value in leaves(json.loads(s["text"])):
                for r in analyze(value, language="en", context=[key] if key else None):
                    if r.entity_type in PRESIDIO_MAP:
                        found.add((PRESIDIO_MAP[r.entity_type], path))
            tally.add_set(found, {(g["type"], g["path"]) for g in s["labels"]})
    return tally, time.perf_counter() - t0


def median_us(fn: Callable[[], object], n: int) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e6


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1500, help="corpus samples")
    ap.add_argument("--seed", type=int, default=20240318)
    ap.add_argument("--no-presidio", action="store_true")
    ap.add_argument("--write", action="store_true", help="write bench/dlp/RESULTS.md")
    args = ap.parse_args()

    corpus = generate(args.n, args.seed)
    size = sum(len(s["text"].encode()) for s in corpus)
    dlp_tally, dlp_secs = run_dlp(corpus)
    analyze, presidio_note = (None, "presidio skipped (--no-presidio)") if args.no_presidio else load_presidio()
    pres = run_presidio(analyze, corpus) if analyze else None

    payload = ticket_bytes(0)
    warm = median_us(lambda: dlp.redact(payload, "application/json", ALL), 3000)
    cold_bodies = iter([ticket_bytes(i) for i in range(1, 3001)])
    cold = median_us(lambda: dlp.redact(next(cold_bodies), "application/json", ALL), 3000)
    scan_us = median_us(lambda: dlp.scan(payload.decode()), 3000)
    from dlp import _engine, _json

    engine_us = median_us(lambda: _engine.candidates(payload.decode()), 3000)
    parse_us = median_us(lambda: _json.parse(payload.decode()), 3000)
    fields_only = dlp.Obligations(fields=("full_name", "email", "phone", "date_of_birth", "$.customer.address"))
    fields_us = median_us(lambda: dlp.redact(payload, "application/json", fields_only), 3000)
    pres_us = median_us(lambda: analyze(payload.decode(), language="en"), 100) if analyze else None

    lines = [
        "# dlp benchmark results",
        "",
        f"Command: `.venv/bin/python bench/dlp/run.py --n {args.n} --seed {args.seed}"
        f"{' --write' if args.write else ''}`  ",
        f"Machine: {cpu_model()}, {os.cpu_count()} cores (shared), "
        f"Python {platform.python_version()}, dlp engine: {dlp.ENGINE}  ",
        f"Corpus: {len(corpus)} samples ({sum(s['kind'] == 'json' for s in corpus)} JSON), {size / 1e6:.2f} MB, "
        f"{sum(len(s['labels']) for s in corpus)} labels; Faker en_US/en_GB/de_DE + hard negatives  ",
        f"Comparison: {presidio_note}",
        "",
        "## Precision / recall per detector",
        "",
        "| detector | dlp precision | dlp recall | presidio precision | presidio recall |",
        "|---|---|---|---|---|",
    ]
    for t in TYPES:
        p, r = dlp_tally.pr(t)
        pp, pr_ = pres[0].pr(t) if pres else (None, None)
        lines.append(f"| {t} | {fmt(p)} | {fmt(r)} | {fmt(pp)} | {fmt(pr_)} |")
    mbs = size / 1e6 / dlp_secs
    lines += [
        "",
        "## Speed",
        "",
        "| measure | dlp | presidio | ratio (presidio / dlp) |",
        "|---|---|---|---|",
        f"| corpus throughput (MB/s) | {mbs:.2f} | "
        + (f"{size / 1e6 / pres[1]:.3f} | {mbs / (size / 1e6 / pres[1]):.1f}x faster |" if pres else "n/a | n/a |"),
        f"| `redact` 2 KB ticket, same payload (median µs) | {warm:.0f} | n/a (no redaction) | |",
        f"| `redact` 2 KB ticket, fresh values each call (median µs) | {cold:.0f} | | |",
        f"| detect only on the ticket text (median µs) | {scan_us:.0f} (`scan`) | "
        + (f"{pres_us:.0f} (`analyze`) | {pres_us / scan_us:.1f}x |" if pres_us else "n/a | |"),
        f"| of which: engine pass + candidate list (median µs) | {engine_us:.0f} | | |",
        f"| of which: strict JSON parse (median µs) | {parse_us:.0f} | | |",
        f"| `redact` by field names only, no detectors (median µs) | {fields_us:.0f} | | |",
        "",
        f"Ticket payload (bench/dlp/payload.py): {len(payload)} bytes, "
        f"{len(dlp.redact(payload, 'application/json', ALL).findings)} redactions.",
        "",
        "## Notes",
        "",
        "- The 2 cores are shared with other work: timings move by up to ±30% between runs (ratios less so).",
        "- The corpus is synthetic and was written alongside the detectors: its look-alike families are the",
        "  ones the detectors were tuned against, so 1.000 here means *no regressions on known families*,",
        "  not 1.000 on real traffic. New look-alike families should be added to corpus.py first.",
        "- Presidio: entity types mapped EMAIL_ADDRESS, PHONE_NUMBER, US_SSN, CREDIT_CARD, IBAN_CODE,",
        "  IP_ADDRESS, and DATE_TIME → DATE_OF_BIRTH (it has no birth-date notion); other entity types it",
        "  reports (URL, UUID, US_BANK_NUMBER, US_DRIVER_LICENSE…) are ignored, which flatters its precision.",
        "  It has no secret recognizers and, without an NER model, no names or addresses. Default score",
        "  threshold (0). JSON samples are analysed per string value with the key as context.",
        "- The 50 µs `redact` target is not met: per call, strict JSON parsing and the tree walk cost",
        "  ~40 µs, the Hyperscan pass ~30 µs, and each of the ~25 surviving candidates costs a few µs of",
        "  Python validation (checksums, numbering-plan look-ups, context). The fresh-values row is the",
        "  honest number; the same-payload row benefits from the validators' memo of slow library verdicts.",
    ]
    report = "\n".join(lines) + "\n"
    print(report)
    if args.write:
        (HERE / "RESULTS.md").write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
