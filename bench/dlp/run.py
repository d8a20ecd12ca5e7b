"""dlp benchmark: precision/recall per detector, MB/s, redact latency, side by side with Presidio.

    .venv/bin/python bench/dlp/run.py                                   # print the report
    .venv/bin/python bench/dlp/run.py --write --out bench/results/dlp.json  # also RESULTS.md + JSON

Latency is reported as P50/P99 per call (``perf_counter`` around each call, after a warm-up)
on two payloads: the ~2 KB gateway ticket with 11 PII items (``bench/ticket.py``, the
payload of the ext_proc benchmark) and the 1.6 KB ticket of ``payload.py`` with fresh PII
values on every call (``ticket_bytes(i)``).  dlp keeps no cache of validation results, so the
first sight of a value costs what a repeat does; the fresh-values row shows it.

``--baseline DIR`` also measures another version of the library in a subprocess (a directory
holding a ``dlp`` package, e.g. ``git archive <rev> dlp | tar -x -C DIR``), alternating with this
one in four chunks, so before/after are measured in the same run on the same machine.
``--baseline python`` measures this package's pure-Python path (``AEGIS_DLP_NATIVE=0``) the same way:
the compiled core against the implementation it must agree with.  ``--latency-only``
prints only the latency JSON (what the baseline subprocess runs).

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
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path[:0] = [str(ROOT), str(HERE)]
# ``--baseline`` runs this script again with another ``dlp`` package first on the path.
if os.environ.get("DLP_BENCH_LIBRARY"):
    sys.path.insert(0, os.environ["DLP_BENCH_LIBRARY"])

from corpus import generate  # noqa: E402
from payload import ticket_bytes  # noqa: E402

import dlp  # noqa: E402
from bench.result import summarize  # noqa: E402
from bench.ticket import ticket_json as gateway_ticket  # noqa: E402

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
    """The tally, and the seconds spent in dlp calls (not in the tally)."""
    tally, spent = Tally(), 0.0
    for s in corpus:
        if s["kind"] == "text":
            t0 = time.perf_counter()
            findings = dlp.scan(s["text"])
            spent += time.perf_counter() - t0
            tally.add_text([(f.type, f.start, f.end) for f in findings], s["labels"])
        else:
            body = s["text"].encode()
            t0 = time.perf_counter()
            result = dlp.redact(body, "application/json", ALL)
            spent += time.perf_counter() - t0
            tally.add_set(
                {(r.type, r.location) for r in result.findings}, {(g["type"], g["path"]) for g in s["labels"]}
            )
    return tally, spent


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
    """Like :func:`run_dlp`: the seconds are those spent in ``analyze`` (JSON: per string value)."""
    tally, spent = Tally(), 0.0

    def timed(*args: Any, **kwargs: Any) -> Any:
        nonlocal spent
        t0 = time.perf_counter()
        out = analyze(*args, **kwargs)
        spent += time.perf_counter() - t0
        return out

    for s in corpus:
        if s["kind"] == "text":
            preds = [
                (PRESIDIO_MAP[r.entity_type], r.start, r.end)
                for r in timed(s["text"], language="en")
                if r.entity_type in PRESIDIO_MAP
            ]
            tally.add_text(preds, s["labels"])
        else:
            found = set()
            for path, key, value in leaves(json.loads(s["text"])):
                for r in timed(value, language="en", context=[key] if key else None):
                    if r.entity_type in PRESIDIO_MAP:
                        found.add((PRESIDIO_MAP[r.entity_type], path))
            tally.add_set(found, {(g["type"], g["path"]) for g in s["labels"]})
    return tally, spent


def median_us(fn: Callable[[], object], n: int) -> float:
    return percentiles_us(fn, n)["p50"]


def percentiles_us(fn: Callable[[], object], n: int, warmup: int = 200) -> dict[str, float]:
    """P50/P90/P99 (and min, mean, max) of ``n`` timed calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    return summarize(timed_us(fn, n))


def timed_us(fn: Callable[[], object], n: int) -> list[float]:
    """``n`` calls of ``fn``, each timed with ``perf_counter`` (µs)."""
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e6)
    return times


ROUNDS = 20


def latency(n: int) -> dict[str, Any]:
    """Per-call latency samples (µs) of ``redact`` (and parts) on the bench payloads; JSON-ready.

    The rows are measured in ``ROUNDS`` interleaved rounds of ``n / ROUNDS`` calls each, so a
    burst of load from the machine's other work spreads over every row instead of one.
    """
    gateway = gateway_ticket().encode()
    fresh_iter = iter([ticket_bytes(i) for i in range(1, n + 201)])
    payload = ticket_bytes(0)
    text = gateway.decode()
    fields_only = dlp.Obligations(fields=("full_name", "email", "phone", "date_of_birth", "$.customer.address"))
    rows: dict[str, Callable[[], object]] = {
        "redact_gateway_ticket": lambda: dlp.redact(gateway, "application/json", ALL),
        "redact_fresh_values": lambda: dlp.redact(next(fresh_iter), "application/json", ALL),
        "scan_gateway_ticket_text": lambda: dlp.scan(text),
        "redact_fields_only": lambda: dlp.redact(payload, "application/json", fields_only),
    }
    samples: dict[str, list[float]] = {name: [] for name in rows}
    for fn in rows.values():  # warm-up
        for _ in range(100):
            fn()
    for _ in range(ROUNDS):
        for name, fn in rows.items():
            samples[name] += timed_us(fn, max(1, n // ROUNDS))
    return {
        "gateway_ticket_bytes": len(gateway),
        "gateway_ticket_redactions": len(dlp.redact(gateway, "application/json", ALL).findings),
        "payload_bytes": len(payload),
        "payload_redactions": len(dlp.redact(payload, "application/json", ALL).findings),
        "samples": samples,
    }


def summarized(latencies: list[dict[str, Any]]) -> dict[str, Any]:
    """Several :func:`latency` runs pooled: their sizes, and percentiles per row."""
    out = {k: v for k, v in latencies[0].items() if k not in ("samples", "dlp_file")}
    for name in latencies[0]["samples"]:
        out[name] = summarize([x for run in latencies for x in run["samples"][name]])
    return out


def baseline_latency(baseline: str, n: int) -> dict[str, Any]:
    """:func:`latency` of the ``dlp`` package in directory ``baseline`` (or of this one's pure-Python
    path when ``baseline`` is ``python``), measured in a subprocess (raw samples)."""
    if baseline == "python":
        env = {**os.environ, "AEGIS_DLP_NATIVE": "0"}
    else:
        env = {**os.environ, "DLP_BENCH_LIBRARY": str(Path(baseline).resolve())}
    out = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--latency-only", "--calls", str(n)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


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


def pct(row: dict[str, float]) -> str:
    return f"{row['p50']:.0f} / {row['p99']:.0f}"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1500, help="corpus samples")
    ap.add_argument("--seed", type=int, default=20240318)
    ap.add_argument("--calls", type=int, default=3000, help="timed calls per latency row")
    ap.add_argument("--no-presidio", action="store_true")
    ap.add_argument("--write", action="store_true", help="write bench/dlp/RESULTS.md")
    ap.add_argument("--out", type=Path, help="write the results as JSON (e.g. bench/results/dlp.json)")
    ap.add_argument(
        "--baseline", help="directory holding another dlp package to measure too, or 'python' (AEGIS_DLP_NATIVE=0)"
    )
    ap.add_argument("--latency-only", action="store_true", help="print the latency JSON only")
    args = ap.parse_args()

    if args.latency_only:
        print(json.dumps({"dlp_file": dlp.__file__, "engine": dlp.ENGINE, **latency(args.calls)}))
        return 0
    # With a baseline, the two alternate in four chunks, so both see the same machine.
    chunks = 4 if args.baseline else 1
    runs: list[dict[str, Any]] = []
    base_runs: list[dict[str, Any]] = []
    for _ in range(chunks):
        if args.baseline:
            base_runs.append(baseline_latency(args.baseline, args.calls // chunks))
        runs.append(latency(args.calls // chunks))
    lat = summarized(runs)
    baseline = summarized(base_runs) if base_runs else None

    corpus = generate(args.n, args.seed)
    size = sum(len(s["text"].encode()) for s in corpus)
    run_dlp(corpus)  # warm: lazily compiled phone plans and DFA caches, each key's meaning per plan
    dlp_tally, dlp_secs = run_dlp(corpus)
    analyze, presidio_note = (None, "presidio skipped (--no-presidio)") if args.no_presidio else load_presidio()
    pres = run_presidio(analyze, corpus) if analyze else None

    gateway = gateway_ticket()
    pres_lat = percentiles_us(lambda: analyze(gateway, language="en"), 100, warmup=5) if analyze else None
    from dlp import _engine

    engine_us = median_us(lambda: _engine.scan_text(gateway), args.calls)
    mbs = size / 1e6 / dlp_secs
    results: dict[str, Any] = {
        "command": " ".join(["bench/dlp/run.py", *sys.argv[1:]]),
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version()},
        "engine": dlp.ENGINE,
        "corpus": {"samples": len(corpus), "bytes": size, "labels": sum(len(s["labels"]) for s in corpus)},
        "precision_recall": {t: dict(zip(("precision", "recall"), dlp_tally.pr(t), strict=True)) for t in TYPES},
        "presidio_precision_recall": (
            {t: dict(zip(("precision", "recall"), pres[0].pr(t), strict=True)) for t in TYPES} if pres else None
        ),
        "corpus_mb_per_s": round(mbs, 3),
        "presidio_corpus_mb_per_s": round(size / 1e6 / pres[1], 4) if pres else None,
        "latency_us": lat,
        "engine_pass_gateway_ticket_p50_us": engine_us,
        "presidio_analyze_gateway_ticket_us": pres_lat,
        "baseline": args.baseline,
        "baseline_latency_us": baseline,
        "presidio": presidio_note,
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1) + "\n")

    red = lat["redact_gateway_ticket"]
    if not args.baseline or baseline is None:
        baseline_name = "none"
    elif args.baseline == "python":
        baseline_name = f"{baseline['engine']}, same package"
    else:
        baseline_name = args.baseline
    lines = [
        "# dlp benchmark results",
        "",
        f"Command: `.venv/bin/python {results['command']}`  ",
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
    lines += [
        "",
        "## Speed (µs per call, P50 / P99)",
        "",
        f"| measure | dlp ({dlp.ENGINE}) | baseline ({baseline_name}) | presidio | presidio / dlp |",
        "|---|---|---|---|---|",
        f"| corpus throughput (MB/s) | {mbs:.2f} | | "
        + (f"{size / 1e6 / pres[1]:.3f} | {mbs / (size / 1e6 / pres[1]):.1f}x |" if pres else "n/a | |"),
        f"| `redact` gateway ticket ({lat['gateway_ticket_bytes']} B, {lat['gateway_ticket_redactions']} redactions)"
        f" | {pct(red)} | {pct(baseline['redact_gateway_ticket']) if baseline else ''} | "
        + (f"{pct(pres_lat)} (`analyze` only) | {pres_lat['p50'] / red['p50']:.0f}x |" if pres_lat else "n/a | |"),
        f"| `redact` bench ticket, fresh values each call ({lat['payload_bytes']} B, "
        f"{lat['payload_redactions']} redactions) | {pct(lat['redact_fresh_values'])} | "
        f"{pct(baseline['redact_fresh_values']) if baseline else ''} | | |",
        f"| `scan` of the gateway ticket's text | {pct(lat['scan_gateway_ticket_text'])} | "
        f"{pct(baseline['scan_gateway_ticket_text']) if baseline else ''} | | |",
        f"| `redact` by field names only, no detectors | {pct(lat['redact_fields_only'])} | "
        f"{pct(baseline['redact_fields_only']) if baseline else ''} | | |",
        f"| the Python path's Hyperscan pass on the gateway ticket text (P50) | | {engine_us:.0f} | | |",
        "",
        "## Notes",
        "",
        "- The 2 cores are shared with other work: timings move by up to ±30% between runs (ratios less so).",
        "  Rows are measured in interleaved rounds, and a baseline (another dlp, in a subprocess) alternates",
        "  with this one in four chunks, so both see the same machine; P99 mostly shows the other work.",
        "- No validation result is cached: the fresh-values row and the same-payload row do the same work.",
        "- `--baseline python` is this package with `AEGIS_DLP_NATIVE=0`: the Python implementation that",
        "  the compiled core must agree with (tests/dlp/native). The fields-only row names a JSON path",
        "  (`$.customer.address`), which the core defers to Python: both columns run Python there.",
        "- Corpus throughput: the time inside dlp calls (Presidio: inside `analyze`), not the tally. dlp's",
        "  pass is timed after one untimed pass (the core compiles phone plans and fills DFA caches on",
        "  first use); Presidio's one pass is timed as it comes.",
        "- The corpus is synthetic and was written alongside the detectors: its look-alike families are the",
        "  ones the detectors were tuned against, so 1.000 here means *no regressions on known families*,",
        "  not 1.000 on real traffic. New look-alike families should be added to corpus.py first.",
        "- Presidio: entity types mapped EMAIL_ADDRESS, PHONE_NUMBER, US_SSN, CREDIT_CARD, IBAN_CODE,",
        "  IP_ADDRESS, and DATE_TIME → DATE_OF_BIRTH (it has no birth-date notion); other entity types it",
        "  reports (URL, UUID, US_BANK_NUMBER, US_DRIVER_LICENSE…) are ignored, which flatters its precision.",
        "  It has no secret recognizers and, without an NER model, no names or addresses. Default score",
        "  threshold (0). JSON samples are analysed per string value with the key as context; its latency",
        "  row is `analyze` of the ticket's text (detection only, no redaction).",
    ]
    report = "\n".join(lines) + "\n"
    print(report)
    if args.write:
        (HERE / "RESULTS.md").write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
