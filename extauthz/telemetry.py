"""Prometheus metrics of one service process (its own registry: no module globals)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from extauthz.decision_cache import CacheStats

# Down to 50 µs: a decision is expected to take well under a millisecond.
LATENCY_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class Children:
    """The children of a labelled metric by their label values, kept once made.

    ``labels()`` validates the values and takes the metric's lock on every call (~1.3 µs,
    nine times in a redacted call); a child lives as long as its metric, so this map grows
    exactly as the metric's own series do.
    """

    def __init__(self, metric: Counter) -> None:
        self._metric = metric
        self._children: dict[tuple[str, ...], Counter] = {}

    def __call__(self, *values: str) -> Counter:
        child = self._children.get(values)
        if child is None:  # two threads may both get here: labels() returns the same child
            child = self._children[values] = self._metric.labels(*values)
        return child


class Metrics:
    """The service's metrics; labels are codes and names, never values from requests."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # Shared by every policy version's decision cache; read at scrape time only.
        self.decision_cache = CacheStats()
        self.registry.register(DecisionCacheCollector(self.decision_cache))
        self.decisions = Counter(
            "aegis_decisions",
            "Decisions by outcome, tool and rule.",
            ["decision", "tool", "rule"],
            registry=self.registry,
        )
        self.decision_seconds = Histogram(
            "aegis_decision_duration_seconds",
            "Time to decide one call.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.policy_info = Gauge(
            "aegis_policy_info", "The active policy version (value 1).", ["policy_version"], registry=self.registry
        )
        self.policy_load_failures = Counter(
            "aegis_policy_load_failures", "Policy bundles that failed to load.", registry=self.registry
        )
        self.redactions = Counter(
            "aegis_redactions",
            "Values redacted by ext_proc, by detector type and tool.",
            ["detector", "tool"],
            registry=self.registry,
        )
        self.redaction_refusals = Counter(
            "aegis_redaction_refusals",
            "Bodies ext_proc refused to pass (could not redact).",
            ["code", "tool"],
            registry=self.registry,
        )
        self.redaction_over_limit_passed = Counter(
            "aegis_redaction_over_limit_passed",
            "Bodies over dlp.max_body_bytes passed unredacted because the policy allows it (over_limit: pass).",
            ["phase", "tool"],
            registry=self.registry,
        )
        # The hot path's counters, by label values (decision, tool, rule; detector or code, tool).
        self.decisions_by = Children(self.decisions)
        self.redactions_by = Children(self.redactions)
        self.redaction_refusals_by = Children(self.redaction_refusals)
        # The decision log (extauthz/audit/writer.py): nothing is ever dropped, so a stall
        # shows as queue depth, blocked hot-path calls and write errors.
        self.decision_log_queue = Gauge(
            "aegis_decision_log_queue_depth", "Decision-log entries waiting to be written.", registry=self.registry
        )
        self.decision_log_entries = Counter(
            "aegis_decision_log_entries",
            "Decision-log entries sealed, by type (header, decision, event, checkpoint).",
            ["type"],
            registry=self.registry,
        )
        self.decision_log_write_errors = Counter(
            "aegis_decision_log_write_errors", "Failed decision-log writes (retried).", registry=self.registry
        )
        self.decision_log_checkpoints = Counter(
            "aegis_decision_log_checkpoints", "Signed decision-log checkpoints sealed.", registry=self.registry
        )
        self.decision_log_blocked = Counter(
            "aegis_decision_log_blocked",
            "Decisions whose thread waited because the decision-log queue was full.",
            registry=self.registry,
        )
        # Human approvals: transitions by event, and notifier deliveries by outcome.
        self.approvals = Counter(
            "aegis_approvals",
            "Approval transitions (requested, approved, denied, expired, token_issued, used, budget_exceeded).",
            ["event"],
            registry=self.registry,
        )
        self.notifications = Counter(
            "aegis_approval_notifications",
            "Approval notifications by notifier and outcome (sent, retried, failed, dropped).",
            ["notifier", "outcome"],
            registry=self.registry,
        )
        # Budgets and rate limits (extauthz/limits/).
        self.limit_refusals = Counter(
            "aegis_limit_refusals",
            "Calls refused by a rate limit or budget (code rate_limited, budget_exhausted; "
            "store_error_allowed: a rate limit skipped because the store failed).",
            ["limit", "code"],
            registry=self.registry,
        )
        self.budget_warnings = Counter(
            "aegis_budget_warnings",
            "Budgets that crossed their warn_at (once per window).",
            ["budget"],
            registry=self.registry,
        )
        self.usage_errors = Counter(
            "aegis_usage_record_errors", "Response usage that could not be added to its budget.", registry=self.registry
        )
        # OpenTelemetry export (extauthz/tracing.py, extauthz/audit/otlp.py): bounded queues
        # that drop rather than stall a request; every drop is counted here.
        self.spans_exported = Counter(
            "aegis_spans_exported", "Spans the service delivered to the OTLP collector.", registry=self.registry
        )
        self.spans_dropped = Counter(
            "aegis_spans_dropped",
            "Spans not delivered, by reason (queue_full: export queue full; export_failed: the export failed).",
            ["reason"],
            registry=self.registry,
        )
        self.otlp_logs_exported = Counter(
            "aegis_decision_log_otlp_exported",
            "Decision-log entries delivered as OTLP log records.",
            registry=self.registry,
        )
        self.otlp_logs_dropped = Counter(
            "aegis_decision_log_otlp_dropped",
            "Decision-log entries not delivered over OTLP (the file has them), by reason (queue_full, export_failed).",
            ["reason"],
            registry=self.registry,
        )


class DecisionCacheCollector(Collector):
    """The decision cache's counters, read when scraped (nothing added to a Check)."""

    def __init__(self, stats: CacheStats) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        lookups = CounterMetricFamily(
            "aegis_decision_cache_lookups",
            "Decision-cache lookups by result (hit: the tool match and engine were skipped).",
            labels=["result"],
        )
        lookups.add_metric(["hit"], self._stats.hits)
        lookups.add_metric(["miss"], self._stats.misses)
        yield lookups
        yield GaugeMetricFamily(
            "aegis_decision_cache_entries", "Decisions cached for the active policy version.", value=self._stats.entries
        )
