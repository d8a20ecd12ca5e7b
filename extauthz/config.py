"""``aegis.yaml``: one file, loaded once into frozen dataclasses.

Relative paths are resolved against the directory of the config file.  Addresses may be
overridden by environment variables (``AEGIS_ENVOY_LISTEN``, ``AEGIS_ENVOY_ADMIN``,
``AEGIS_GRPC_ADDR``, ``AEGIS_HTTP_ADDR``).  Every validation error names the file, the key
and what was expected; unknown keys are rejected so a typo never silently disables a setting.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from extauthz.approvals.settings import ApprovalsConfig, parse_approvals
from extauthz.audit.settings import AuditConfig, parse_audit
from extauthz.config_fields import Fields, parse_address, resolve_path
from extauthz.errors import ConfigError

DEFAULT_ENVOY_LISTEN = "127.0.0.1:10000"
DEFAULT_ENVOY_ADMIN = "127.0.0.1:9901"
DEFAULT_GRPC_ADDR = "127.0.0.1:9191"
DEFAULT_HTTP_ADDR = "127.0.0.1:9192"
DEFAULT_EXT_PROC_ADDR = "127.0.0.1:9193"
DEFAULT_MAX_REQUEST_BYTES = 1024 * 1024
DEFAULT_ALGORITHMS = ("RS256", "ES256", "EdDSA")
# Asymmetric algorithms only: an HMAC key configured as "public" would let anyone holding
# the verification key mint tokens (the classic RS->HS confusion).
SUPPORTED_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
DEFAULT_MAX_TOKEN_LIFETIME_S = 3600
DEFAULT_LEEWAY_S = 30
DEFAULT_JWKS_CACHE_S = 300
DEFAULT_JWKS_MIN_REFRESH_S = 30
DEFAULT_APPROVAL_TTL_S = 3600
DEFAULT_STORE = "sqlite:///aegis.db"
# No request waits longer than this on the store (Redis socket and connect timeouts).
DEFAULT_STORE_TIMEOUT_S = 0.25
STORE_SCHEMES = ("sqlite:///", "redis://", "rediss://")
DEFAULT_POLICY_POLL_S = 2.0
DEFAULT_OPA_TIMEOUT_S = 0.5  # engine: opa; keep in step with extauthz.engine.opa
DEFAULT_DECISION_CACHE = 512  # keep in step with extauthz.decision_cache.DEFAULT_ENTRIES
POLICY_ENGINES = ("embedded", "native", "regopy", "opa")


@dataclass(frozen=True)
class EnvoyConfig:
    """Where Envoy listens and what it forwards to the service."""

    listen: str = DEFAULT_ENVOY_LISTEN
    admin: str = DEFAULT_ENVOY_ADMIN
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    access_log: str = "stdout"  # "stdout" or a file path
    binary: str = "envoy"


@dataclass(frozen=True)
class ServiceConfig:
    """The Aegis service's own listeners."""

    grpc: str = DEFAULT_GRPC_ADDR
    http: str = DEFAULT_HTTP_ADDR
    # ext_proc runs on its own grpc.aio server: its streams stay open while the upstream
    # answers, which would hold the sync Check server's threads.
    ext_proc: str = DEFAULT_EXT_PROC_ADDR
    # Base URL agents use to reach the HTTP API (status_url in 202 answers).
    public_url: str = ""
    # Environment variable holding the admin token (POST /v1/policy/reload); unset: disabled.
    admin_token_env: str = ""

    @property
    def base_url(self) -> str:
        return self.public_url.rstrip("/") or f"http://{self.http}"


@dataclass(frozen=True)
class IdentityConfig:
    """How agent JWTs are verified (and, for development, minted)."""

    issuer: str
    audience: str
    algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS
    public_keys: tuple[Path, ...] = ()
    jwks_url: str = ""
    jwks_cache_s: float = DEFAULT_JWKS_CACHE_S
    jwks_min_refresh_s: float = DEFAULT_JWKS_MIN_REFRESH_S
    max_lifetime_s: float = DEFAULT_MAX_TOKEN_LIFETIME_S
    leeway_s: float = DEFAULT_LEEWAY_S
    dev_signing_key: Path | None = None


@dataclass(frozen=True)
class PolicyConfig:
    """Where the policy set comes from and which engine evaluates it."""

    dir: Path | None = None  # exactly one of dir, bundle, bundle_url
    engine: str = "embedded"
    bundle: Path | None = None
    bundle_url: str = ""
    # How often the source is checked for a new version (0: only on POST /v1/policy/reload).
    poll_interval_s: float = DEFAULT_POLICY_POLL_S
    # engine: opa — the OPA sidecar serving the same bundle, and its per-decision timeout.
    opa_url: str = ""
    opa_timeout_s: float = DEFAULT_OPA_TIMEOUT_S
    # Bundles (policy.bundle / bundle_url) must carry a valid OPA signature by this key.
    verification_key: Path | None = None
    verification_key_id: str = ""
    # Decisions kept for identical calls, per policy version (0: none); native engine only.
    decision_cache: int = DEFAULT_DECISION_CACHE

    @property
    def source(self) -> str:
        """Where the policy comes from, for messages."""
        return str(self.dir or self.bundle or self.bundle_url)


@dataclass(frozen=True)
class DlpConfig:
    """How ext_proc redacts: defaults applied to every response, mode, limits."""

    response_detectors: tuple[str, ...] = ()
    mode: str = "mask"
    hash_key_file: Path | None = None
    max_body_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    on_binary: str = "pass"


@dataclass(frozen=True)
class TelemetryConfig:
    """OpenTelemetry tracing: where spans go (Envoy's and the service's)."""

    otlp_endpoint: str = ""  # host:port (grpc) or http(s)://host:port (http); empty: tracing off
    otlp_protocol: str = "grpc"
    service_name: str = "aegis"
    sample_ratio: float = 1.0
    max_queue: int = 2048
    decision_log_otlp: bool = True  # with an endpoint (and audit.path): decision-log entries as OTLP logs

    @property
    def enabled(self) -> bool:
        return bool(self.otlp_endpoint)

    @property
    def decision_log_export(self) -> bool:
        """Whether decision-log entries are also sent as OTLP log records."""
        return self.enabled and self.decision_log_otlp


@dataclass(frozen=True)
class DemoConfig:
    """``aegis up`` also starts the demo tool servers when enabled."""

    tools: bool = False


@dataclass(frozen=True)
class AegisConfig:
    """Everything ``aegis.yaml`` says, validated."""

    path: Path
    identity: IdentityConfig
    policy: PolicyConfig
    envoy: EnvoyConfig = field(default_factory=EnvoyConfig)
    service: ServiceConfig = field(default_factory=ServiceConfig)
    store: str = DEFAULT_STORE
    store_timeout_s: float = DEFAULT_STORE_TIMEOUT_S
    approvals: ApprovalsConfig = field(default_factory=ApprovalsConfig)
    upstreams: Mapping[str, str] = field(default_factory=dict)
    dlp: DlpConfig = field(default_factory=DlpConfig)
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    demo: DemoConfig = field(default_factory=DemoConfig)

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    @property
    def sqlite_path(self) -> Path | None:
        """The SQLite file named by ``store``, or None for other backends."""
        if not self.store.startswith("sqlite:///"):
            return None
        return resolve_path(self.base_dir, self.store.removeprefix("sqlite:///"))


_ENV_OVERRIDES = {
    ("envoy", "listen"): "AEGIS_ENVOY_LISTEN",
    ("envoy", "admin"): "AEGIS_ENVOY_ADMIN",
    ("service", "grpc"): "AEGIS_GRPC_ADDR",
    ("service", "http"): "AEGIS_HTTP_ADDR",
    ("service", "ext_proc"): "AEGIS_EXT_PROC_ADDR",
    # Each replica of `aegis up --replicas N` writes its own decision log (its own chain).
    ("audit", "path"): "AEGIS_AUDIT_PATH",
}


def load_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> AegisConfig:
    """Load and validate ``aegis.yaml``; raise ``ConfigError`` naming file and key."""
    path = Path(path).resolve()
    env = os.environ if env is None else env
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror}") from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    reader = _Reader(path)
    return reader.config(raw if raw is not None else {}, env)


class _Reader(Fields):
    """Validates the raw YAML section by section, naming the key on every error."""

    def config(self, raw: Any, env: Mapping[str, str]) -> AegisConfig:
        if not isinstance(raw, dict):
            raise self.fail("(top level)", "a mapping", raw)
        top = {"envoy", "service", "identity", "policy", "store", "approvals", "upstreams", "dlp", "telemetry"}
        top |= {"audit", "demo", "store_timeout"}
        unknown = sorted(set(raw) - top)
        if unknown:
            raise ConfigError(f"{self.path}: unknown top-level key {unknown[0]!r} (allowed: {', '.join(sorted(top))})")
        for (section, key), var in _ENV_OVERRIDES.items():
            if env.get(var):
                raw.setdefault(section, {})
                if raw[section] is None:
                    raw[section] = {}
                raw[section][key] = env[var]
        return AegisConfig(
            path=self.path,
            envoy=self.envoy(raw),
            service=self.service(raw),
            identity=self.identity(raw),
            policy=self.policy(raw),
            store=self.store(raw),
            store_timeout_s=self.store_timeout(raw),
            approvals=self.approvals(raw),
            upstreams=self.upstreams(raw),
            dlp=self.dlp(raw),
            telemetry=self.telemetry(raw),
            audit=self.audit(raw),
            demo=self.demo(raw),
        )

    def envoy(self, raw: Mapping[str, Any]) -> EnvoyConfig:
        s = self.section(raw, "envoy", {"listen", "admin", "max_request_bytes", "access_log", "binary"})
        admin = self.address(s, "envoy.admin", DEFAULT_ENVOY_ADMIN)
        if not _is_loopback(admin):
            raise self.fail("envoy.admin", "a loopback address (the admin API must not be exposed)", admin)
        return EnvoyConfig(
            listen=self.address(s, "envoy.listen", DEFAULT_ENVOY_LISTEN),
            admin=admin,
            max_request_bytes=self.positive_int(s, "envoy.max_request_bytes", DEFAULT_MAX_REQUEST_BYTES),
            access_log=self.string(s, "envoy.access_log", "stdout"),
            binary=self.string(s, "envoy.binary", "envoy"),
        )

    def service(self, raw: Mapping[str, Any]) -> ServiceConfig:
        s = self.section(raw, "service", {"grpc", "http", "ext_proc", "public_url", "admin_token_env"})
        return ServiceConfig(
            grpc=self.grpc_address(s, "service.grpc", DEFAULT_GRPC_ADDR),
            http=self.address(s, "service.http", DEFAULT_HTTP_ADDR),
            ext_proc=self.grpc_address(s, "service.ext_proc", DEFAULT_EXT_PROC_ADDR),
            public_url=self.url(s, "service.public_url"),
            admin_token_env=self.string(s, "service.admin_token_env", ""),
        )

    def identity(self, raw: Mapping[str, Any]) -> IdentityConfig:
        allowed = {
            "issuer",
            "audience",
            "algorithms",
            "public_keys",
            "jwks_url",
            "jwks_cache",
            "jwks_min_refresh",
            "max_lifetime",
            "leeway",
            "dev_signing_key",
        }
        s = self.section(raw, "identity", allowed)
        issuer = self.string(s, "identity.issuer", "")
        audience = self.string(s, "identity.audience", "")
        if not issuer:
            raise self.fail("identity.issuer", "the expected token issuer (iss)", s.get("issuer"))
        if not audience:
            raise self.fail("identity.audience", "the expected token audience (aud)", s.get("audience"))
        algorithms = s.get("algorithms", list(DEFAULT_ALGORITHMS))
        if not isinstance(algorithms, list) or not algorithms:
            raise self.fail("identity.algorithms", "a non-empty list", algorithms)
        for alg in algorithms:
            if alg not in SUPPORTED_ALGORITHMS:
                raise self.fail(
                    "identity.algorithms",
                    f"asymmetric algorithms only ({', '.join(sorted(SUPPORTED_ALGORITHMS))})",
                    alg,
                )
        keys = s.get("public_keys", [])
        if isinstance(keys, str):
            keys = [keys]
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise self.fail("identity.public_keys", "a list of PEM file paths", keys)
        jwks_url = self.url(s, "identity.jwks_url")
        if not keys and not jwks_url:
            raise ConfigError(f"{self.path}: identity: set public_keys or jwks_url (how tokens are verified)")
        return IdentityConfig(
            issuer=issuer,
            audience=audience,
            algorithms=tuple(algorithms),
            public_keys=tuple(resolve_path(self.base, k) for k in keys),
            jwks_url=jwks_url,
            jwks_cache_s=self.duration(s, "identity.jwks_cache", DEFAULT_JWKS_CACHE_S),
            jwks_min_refresh_s=self.duration(s, "identity.jwks_min_refresh", DEFAULT_JWKS_MIN_REFRESH_S),
            max_lifetime_s=self.duration(s, "identity.max_lifetime", DEFAULT_MAX_TOKEN_LIFETIME_S),
            leeway_s=self.duration(s, "identity.leeway", DEFAULT_LEEWAY_S),
            dev_signing_key=self.file(s, "identity.dev_signing_key"),
        )

    def policy(self, raw: Mapping[str, Any]) -> PolicyConfig:
        s = self.section(
            raw,
            "policy",
            {"dir", "engine", "bundle", "bundle_url", "poll_interval", "opa_url", "opa_timeout"}
            | {"verification_key", "verification_key_id", "decision_cache"},
        )
        directory = self.string(s, "policy.dir", "")
        bundle = self.string(s, "policy.bundle", "")
        bundle_url = self.string(s, "policy.bundle_url", "")
        if sum(map(bool, (directory, bundle, bundle_url))) != 1:
            raise ConfigError(
                f"{self.path}: policy: set exactly one of dir (YAML policies), bundle (an OPA bundle file) "
                "or bundle_url (a bundle server)"
            )
        self.url(s, "policy.bundle_url")
        engine = self.string(s, "policy.engine", "embedded")
        if engine not in POLICY_ENGINES:
            raise self.fail("policy.engine", f"one of {', '.join(POLICY_ENGINES)}", engine)
        opa_url = self.string(s, "policy.opa_url", "")
        if engine == "opa" and not opa_url.startswith(("http://", "https://")):
            raise self.fail("policy.opa_url", "the http(s) URL of the OPA sidecar (policy.engine is opa)", opa_url)
        if engine != "opa" and opa_url:
            raise self.fail("policy.opa_url", f"no value unless policy.engine is opa (engine is {engine})", opa_url)
        return PolicyConfig(
            dir=resolve_path(self.base, directory) if directory else None,
            engine=engine,
            bundle=resolve_path(self.base, bundle) if bundle else None,
            bundle_url=bundle_url,
            poll_interval_s=self.duration(s, "policy.poll_interval", DEFAULT_POLICY_POLL_S),
            opa_url=opa_url.rstrip("/"),
            opa_timeout_s=self.duration(s, "policy.opa_timeout", DEFAULT_OPA_TIMEOUT_S),
            verification_key=self.verification_key(s, directory),
            verification_key_id=self.string(s, "policy.verification_key_id", ""),
            decision_cache=self.count(s, "policy.decision_cache", DEFAULT_DECISION_CACHE),
        )

    def verification_key(self, s: Mapping[str, Any], directory: str) -> Path | None:
        key = self.file(s, "policy.verification_key")
        if key and directory:
            expected = "a bundle source (signatures are on bundles, not dir)"
            raise self.fail("policy.verification_key", expected, s.get("verification_key"))
        return key

    def store(self, raw: Mapping[str, Any]) -> str:
        value = raw.get("store", DEFAULT_STORE)
        expected = "a store URL such as sqlite:///aegis.db or redis://127.0.0.1:6379/0"
        if not isinstance(value, str) or not value.startswith(STORE_SCHEMES):
            raise self.fail("store", expected, value)
        if value.startswith("sqlite:///"):
            return value
        try:
            parts = urlsplit(value)
            port = parts.port
        except ValueError:
            raise self.fail("store", expected, _redact_url(value)) from None
        if not parts.hostname:
            raise self.fail("store", "a Redis URL with a host (redis://host:port/db)", _redact_url(value))
        db = parts.path.strip("/")
        if db and not db.isdigit():
            raise self.fail("store", "a Redis database number as the path (redis://host:port/0)", _redact_url(value))
        if port is not None and not 0 < port < 65536:
            raise self.fail("store", expected, _redact_url(value))
        return value

    def store_timeout(self, raw: Mapping[str, Any]) -> float:
        value = self.duration(raw, "store_timeout", DEFAULT_STORE_TIMEOUT_S)
        if value <= 0 or value > 5:
            raise self.fail("store_timeout", "a duration above 0 and at most 5s (e.g. 250ms)", raw.get("store_timeout"))
        return value

    def audit(self, raw: Mapping[str, Any]) -> AuditConfig:
        # The section's schema lives with the audit package (extauthz/audit/settings.py).
        return parse_audit(raw.get("audit"), self)

    def approvals(self, raw: Mapping[str, Any]) -> ApprovalsConfig:
        # The section's schema lives with the approvals package (extauthz/approvals/settings.py).
        return parse_approvals(raw.get("approvals"), self)

    def upstreams(self, raw: Mapping[str, Any]) -> dict[str, str]:
        value = raw.get("upstreams", {}) or {}
        if not isinstance(value, dict):
            raise self.fail("upstreams", "a mapping of tool host to URL", value)
        out: dict[str, str] = {}
        for host, url in value.items():
            if not isinstance(host, str) or not re.fullmatch(r"[A-Za-z0-9.-]+", host):
                raise self.fail("upstreams", "host names as keys", host)
            if not isinstance(url, str) or not re.fullmatch(r"https?://[^/:]+(:\d+)?/?", url):
                raise self.fail(f"upstreams.{host}", "a URL like http://127.0.0.1:8080", url)
            out[host.lower()] = url.rstrip("/")
        return out

    def dlp(self, raw: Mapping[str, Any]) -> DlpConfig:
        s = self.section(raw, "dlp", {"response_detectors", "mode", "hash_key_file", "max_body_bytes", "on_binary"})
        detectors = s.get("response_detectors", [])
        if not isinstance(detectors, list) or not all(isinstance(d, str) for d in detectors):
            raise self.fail("dlp.response_detectors", "a list of detector names (e.g. [SECRET])", detectors)
        mode = self.string(s, "dlp.mode", "mask")
        if mode not in {"mask", "partial", "hash", "remove"}:
            raise self.fail("dlp.mode", "one of mask, partial, hash, remove", mode)
        key_file = self.file(s, "dlp.hash_key_file")
        if mode == "hash" and not key_file:
            raise ConfigError(f"{self.path}: dlp.hash_key_file: required when dlp.mode is hash")
        on_binary = self.string(s, "dlp.on_binary", "pass")
        if on_binary not in {"pass", "block"}:
            raise self.fail("dlp.on_binary", "pass or block", on_binary)
        return DlpConfig(
            response_detectors=tuple(detectors),
            mode=mode,
            hash_key_file=key_file,
            max_body_bytes=self.positive_int(s, "dlp.max_body_bytes", DEFAULT_MAX_REQUEST_BYTES),
            on_binary=on_binary,
        )

    def telemetry(self, raw: Mapping[str, Any]) -> TelemetryConfig:
        allowed = {"otlp_endpoint", "otlp_protocol", "service_name", "sample_ratio", "max_queue", "decision_log_otlp"}
        s = self.section(raw, "telemetry", allowed)
        protocol = self.string(s, "telemetry.otlp_protocol", "grpc")
        if protocol not in {"grpc", "http"}:
            raise self.fail("telemetry.otlp_protocol", "grpc or http", protocol)
        endpoint = self.string(s, "telemetry.otlp_endpoint", "")
        if endpoint and protocol == "grpc":
            parse_address(endpoint, what=f"{self.path}: telemetry.otlp_endpoint")
        if endpoint and protocol == "http" and not endpoint.startswith(("http://", "https://")):
            raise self.fail("telemetry.otlp_endpoint", "an http(s) URL for otlp_protocol http", endpoint)
        ratio = s.get("sample_ratio", 1.0)
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 <= ratio <= 1:
            raise self.fail("telemetry.sample_ratio", "a number from 0 to 1", ratio)
        return TelemetryConfig(
            otlp_endpoint=endpoint,
            otlp_protocol=protocol,
            service_name=self.string(s, "telemetry.service_name", "aegis"),
            sample_ratio=float(ratio),
            max_queue=self.positive_int(s, "telemetry.max_queue", 2048),
            decision_log_otlp=self.boolean(s, "telemetry.decision_log_otlp", True),
        )

    def demo(self, raw: Mapping[str, Any]) -> DemoConfig:
        s = self.section(raw, "demo", {"tools"})
        return DemoConfig(tools=self.boolean(s, "demo.tools", False))


def _redact_url(url: str) -> str:
    """A store URL fit for an error message: the password replaced by ***."""
    return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", url)


def _is_loopback(address: str) -> bool:
    host, _ = parse_address(address)
    return host in {"localhost", "::1"} or host.startswith("127.")
