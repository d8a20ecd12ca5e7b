"""The service's Python per call, warm and with the CPU caches evicted first.

``python -m bench.cold [--samples 600] [--evict-mb 48] [--out bench/out/cold.json]``

At one connection each call finds the service idle: Envoy, wrk and the upstream (and, on a
cloud host, its neighbours) have run since the last call, and the service's code and data
have left the CPU caches.  Its CPU per call there is two to three times what it is under
load (``bench.dlp_gateway`` reads both from ``/proc``).  This benchmark measures that in
process, without the network: each workload runs as the compiled gRPC front calls it (the
handler with the raw message bytes), once warm (batches of calls, back to back) and once
after writing ``--evict-mb`` of memory (one call per eviction; thread CPU time).

Each workload has a floor measured in the same run, interleaved with it: the no-op Check
and ext_proc of ``bench.noop_authz``, which is what ``bench.gateway``'s and
``bench.dlp_gateway``'s floors run.  Workloads (``bench.dlp_gateway``'s calls, Aegis's
policies, decision cache on, as a repeated call is):

* ``refund``: the refund's Check;
* ``slack check``: the Slack post's Check, which redacts the request body;
* ``slack stream``: the Slack post's response-only ext_proc stream (open, the response
  headers, the 2 KB ticket redacted under the detectors);
* ``crm stream``: the CRM read's stream (the ticket redacted by field rules).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import attribute_context_pb2, external_auth_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as proc_pb

from bench.dlp_gateway import CRM_HOST, SCOPES, SLACK_HOST, bench_policy_dir, requests
from bench.inprocess import in_process
from bench.noop_authz import AllowEverything, pass_everything
from bench.request import BenchRequest
from bench.stack import TOOL_HOST
from bench.ticket import SSN, ticket_json
from extauthz import grpc_front
from extauthz.devtokens import mint_token
from extauthz.metadata import EXT_AUTHZ_NAMESPACE, GRPC_ENVOY_FEATURES, MD_REQUEST_BODY
from extauthz.server import ext_proc_servicer

DEFAULT_OUT = Path("bench/out/cold.json")
WARM_BATCH = 300
# The bootstrap's ext_authz initial metadata: this Envoy puts a handed request body in place.
CHECK_METADATA = ((GRPC_ENVOY_FEATURES, "request-body-filter"),)

Call = Callable[[], object]


@dataclass(frozen=True)
class Workload:
    name: str
    aegis: Call
    floor: Call


@dataclass(frozen=True)
class Measured:
    """µs of thread CPU per call: warm (median of batches) and evicted (percentiles of calls)."""

    warm_us: float
    evicted_p25_us: float
    evicted_p50_us: float
    evicted_p90_us: float


def check_bytes(call: BenchRequest) -> bytes:
    """The CheckRequest Envoy sends for ``call`` (headers as Envoy adds them, body as bytes)."""
    headers = {
        ":authority": call.host,
        ":method": call.method,
        ":path": call.path,
        ":scheme": "http",
        "user-agent": "wrk",
        "x-forwarded-proto": "http",
        "x-request-id": "0f8e1f9a-5b1c-4d7e-8a2f-3c4d5e6f7a8b",
        **{name.lower(): value for name, value in call.headers.items()},
    }
    http = attribute_context_pb2.AttributeContext.HttpRequest(
        method=call.method, host=call.host, path=call.path, headers=headers, raw_body=call.body.encode()
    )
    request = attribute_context_pb2.AttributeContext.Request(http=http)
    return external_auth_pb2.CheckRequest(
        attributes=attribute_context_pb2.AttributeContext(request=request)
    ).SerializeToString()


def response_stream(forwarded: external_auth_pb2.CheckResponse, body: bytes) -> tuple[bytes, bytes]:
    """The response-only instance's two messages, each with Check's metadata as Envoy forwards
    it (without the request body, which Envoy's Lua filter drops once it is in place)."""
    metadata = forwarded.dynamic_metadata
    if MD_REQUEST_BODY in metadata.fields:
        del metadata.fields[MD_REQUEST_BODY]
    headers = base_pb2.HeaderMap(
        headers=[
            base_pb2.HeaderValue(key=key, raw_value=value.encode())
            for key, value in (
                (":status", "200"),
                ("content-type", "application/json"),
                ("content-length", str(len(body))),
            )
        ]
    )
    messages = (
        proc_pb.ProcessingRequest(response_headers=proc_pb.HttpHeaders(headers=headers)),
        proc_pb.ProcessingRequest(response_body=proc_pb.HttpBody(body=body, end_of_stream=True)),
    )
    for message in messages:
        message.metadata_context.filter_metadata[EXT_AUTHZ_NAMESPACE].CopyFrom(metadata)
    return messages[0].SerializeToString(), messages[1].SerializeToString()


def stream_call(open_stream: grpc_front.RawStreamOpener, messages: Sequence[bytes]) -> Call:
    def run() -> list[object]:
        session = open_stream((), "unix:")
        if not callable(session):
            raise RuntimeError(f"the stream did not open: {session}")
        return [session(message) for message in messages]

    return run


def answered(call: Call) -> bytes:
    """One call's answer; a gRPC status (a failed handler) stops the benchmark."""
    answer = call()
    if isinstance(answer, tuple):
        raise RuntimeError(f"the handler failed: {answer}")
    assert isinstance(answer, bytes)
    return answer


@contextmanager
def workloads(workdir: Path) -> Iterator[list[Workload]]:
    """The service (its config, keys and store in ``workdir``) and the four workloads."""
    policies = bench_policy_dir(workdir / "policies")
    hosts = (TOOL_HOST, SLACK_HOST, CRM_HOST)
    with in_process(workdir / "service", policies, freeze_heap=True, hosts=hosts) as proc:
        service = proc.service
        token = mint_token(proc.config.identity, agent="bench-bot", tenant="acme", scopes=SCOPES, ttl_s=1800)
        calls = requests(token)
        parse_check = external_auth_pb2.CheckRequest.FromString
        check = grpc_front.unary_handler(proc.servicer.Check, parse_check, "Check")
        noop = grpc_front.unary_handler(AllowEverything().Check, parse_check, "Check")
        noop_redacting = grpc_front.unary_handler(AllowEverything(redacting=True).Check, parse_check, "Check")
        processor = ext_proc_servicer(service)
        parse_message = proc_pb.ProcessingRequest.FromString
        aegis_stream = grpc_front.stream_handler(
            lambda context: processor.open_stream(context.invocation_metadata()).answer, parse_message, "Process"
        )
        noop_stream = grpc_front.stream_handler(lambda context: pass_everything, parse_message, "Process")

        def check_call(handler: grpc_front.RawHandler, message: bytes) -> Call:
            return lambda: handler(message, CHECK_METADATA, "unix:")

        def stream_of(name: str) -> tuple[bytes, bytes]:
            answer = external_auth_pb2.CheckResponse.FromString(answered(check_call(check, check_bytes(calls[name]))))
            if answer.status.code != 0:
                raise RuntimeError(f"the {name} call was not allowed: {answer.denied_response.body}")
            return response_stream(answer, ticket_json().encode())

        refund, slack = check_bytes(calls["refund"]), check_bytes(calls["slack"])
        slack_stream, crm_stream = stream_of("slack"), stream_of("crm")
        aegis_slack, aegis_crm = stream_call(aegis_stream, slack_stream), stream_call(aegis_stream, crm_stream)
        verify(check_call(check, refund), aegis_slack, aegis_crm)
        yield [
            Workload("refund", check_call(check, refund), check_call(noop, refund)),
            Workload("slack check", check_call(check, slack), check_call(noop_redacting, slack)),
            Workload("slack stream", aegis_slack, stream_call(noop_stream, slack_stream)),
            Workload("crm stream", aegis_crm, stream_call(noop_stream, crm_stream)),
        ]


def redacted_body(answers: object) -> bytes:
    """The response body the stream's last answer puts in place."""
    assert isinstance(answers, list)
    last = answers[-1]
    if not isinstance(last, tuple) or not isinstance(last[0], list):
        raise RuntimeError(f"the stream failed: {last}")
    return proc_pb.ProcessingResponse.FromString(last[0][-1]).response_body.response.body_mutation.body


def verify(refund: Call, slack_stream: Call, crm_stream: Call) -> None:
    """The workloads do the work they are named for: the refund is allowed, and both streams
    replace the ticket with one whose customer's SSN is redacted."""
    answer = external_auth_pb2.CheckResponse.FromString(answered(refund))
    if answer.status.code != 0:
        raise RuntimeError(f"the refund was not allowed: {answer.denied_response.body}")
    for name, stream in (("slack", slack_stream), ("crm", crm_stream)):
        body = redacted_body(stream())
        if not body or json.loads(body)["customer"]["ssn"] == SSN:
            raise RuntimeError(f"the {name} stream did not redact the ticket")


class Evictor:
    """Copies ``megabytes`` from one buffer into another: every cache line of both passes
    through the CPU's caches (memcpy, in C: ~10 ms for 48 MB here), pushing out what the
    measured call left there.  The default exceeds this machine's 32 MB L3."""

    def __init__(self, megabytes: int) -> None:
        self._source = bytearray(b"\x5a" * (megabytes * 1024 * 1024))
        self._target = bytearray(len(self._source))

    def __call__(self) -> None:
        self._target[:] = self._source


def measure(calls: dict[str, Call], samples: int, evict: Evictor) -> dict[str, Measured]:
    """Every call measured warm, then evicted: ``samples`` rounds, each call once per round
    (interleaved, so a busier moment of the machine weighs on all of them alike)."""
    for call in calls.values():
        for _ in range(WARM_BATCH):
            call()
    warm: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(5):
        for name, call in calls.items():
            started = time.thread_time_ns()
            for _ in range(WARM_BATCH):
                call()
            warm[name].append((time.thread_time_ns() - started) / WARM_BATCH / 1000)
    evicted: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(samples):
        for name, call in calls.items():
            evict()
            started = time.thread_time_ns()
            call()
            evicted[name].append((time.thread_time_ns() - started) / 1000)
    out = {}
    for name in calls:
        quartiles = statistics.quantiles(evicted[name], n=20)  # 5 % steps
        out[name] = Measured(
            warm_us=statistics.median(warm[name]),
            evicted_p25_us=quartiles[4],
            evicted_p50_us=statistics.median(evicted[name]),
            evicted_p90_us=quartiles[17],
        )
    return out


def table(results: dict[str, dict[str, Measured]]) -> str:
    rows = [
        "| workload | warm: floor / Aegis µs | evicted P50: floor / Aegis µs | Aegis over floor, warm / evicted µs "
        "| evicted ÷ warm (Aegis) |",
        "|---|--:|--:|--:|--:|",
    ]
    for name, sides in results.items():
        floor, aegis = sides["floor"], sides["aegis"]
        rows.append(
            f"| {name} | {floor.warm_us:.1f} / {aegis.warm_us:.1f} | {floor.evicted_p50_us:.1f} / "
            f"{aegis.evicted_p50_us:.1f} | +{aegis.warm_us - floor.warm_us:.1f} / "
            f"+{aegis.evicted_p50_us - floor.evicted_p50_us:.1f} | {aegis.evicted_p50_us / aegis.warm_us:.1f}x |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cold", description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=600, help="evicted calls per workload and side")
    parser.add_argument("--evict-mb", type=int, default=48, help="memory copied before each evicted call")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    evict = Evictor(args.evict_mb)
    with tempfile.TemporaryDirectory(prefix="aegis-cold-") as tmp, workloads(Path(tmp)) as loads:
        calls = {f"{w.name}/{side}": getattr(w, side) for w in loads for side in ("floor", "aegis")}
        measured = measure(calls, args.samples, evict)
    results = {w.name: {side: measured[f"{w.name}/{side}"] for side in ("floor", "aegis")} for w in loads}
    report = {
        "command": "python -m bench.cold " + " ".join(argv if argv is not None else sys.argv[1:]),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "samples": args.samples,
        "evict_mb": args.evict_mb,
        "results": {name: {side: asdict(m) for side, m in sides.items()} for name, sides in results.items()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(table(results))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
