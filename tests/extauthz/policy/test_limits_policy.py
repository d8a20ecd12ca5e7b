"""budgets: and rate_limits: in the policy language: schema, semantic checks (file:line), bundle data."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import copy_policy_dir

from extauthz.errors import ConfigError, PolicyError
from extauthz.limits import PolicyLimits
from extauthz.policy import build_bundle, load_policy_dir

TOOLS = """
policy_set: t
tools:
  pay.refund:
    match: {host: pay.test, method: POST, path: /refund}
  pay.charge:
    match: {host: pay.test, method: POST, path: /charge}
"""


def fails(tmp_path: Path, text: str) -> str:
    directory = copy_policy_dir(tmp_path / "p", TOOLS + text)
    with pytest.raises(PolicyError) as info:
        load_policy_dir(directory)
    return info.value.message


@pytest.mark.parametrize(
    ("extra", "line", "expected"),
    [
        ("budgets:\n  - {id: b, tools: [pay.*], per_day: {}}\n", 9, "budgets[0].per_day"),
        ("budgets:\n  - {id: b, tools: [nope.*], per_day: {requests: 1}}\n", 9, "no tool in the catalogue matches"),
        (
            "budgets:\n  - {id: b, tools: [pay.*], per_day: {requests: 1}, timezone: Mars/Base}\n",
            9,
            "unknown time zone",
        ),
        ("budgets:\n  - {id: b, tools: [pay.*], per_day: {cost: 1}}\n", 9, "a cost limit needs cost"),
        ("budgets:\n  - {id: b, tools: [pay.*], per_day: {requests: 1}, cost: {fixed: 1}}\n", 9, "per_day.cost"),
        ("budgets:\n  - {id: b, tools: [pay.*], per_day: {requests: 1}, warn_at: 1.5}\n", 9, "warn_at"),
        (
            "budgets:\n  - {id: b, tools: [pay.*], per_day: {requests: 1}}\n  - {id: b, tools: [pay.*], per_day: {requests: 2}}\n",
            10,
            "budget id 'b' is already used",
        ),
        ("rate_limits:\n  - {id: r, tools: [pay.*], rate: 0, per_seconds: 1}\n", 9, "rate_limits[0].rate"),
        ("rate_limits:\n  - {id: r, tools: [pay.*], rate: 1, per_seconds: 1, per: all}\n", 9, "rate_limits[0].per"),
        (
            "rate_limits:\n  - {id: r, tools: [pay.*], rate: 1, per_seconds: 1, on_store_error: maybe}\n",
            9,
            "on_store_error",
        ),
    ],
)
def test_bad_limits_name_file_line_and_key(tmp_path: Path, extra: str, line: int, expected: str):
    message = fails(tmp_path, extra)
    assert f"p0.yaml:{line}:" in message and expected in message


def test_limits_reach_the_bundle_and_the_runtime_model(tmp_path: Path):
    text = TOOLS + (
        "budgets:\n"
        "  - id: b\n    agents: {tenants: [acme]}\n    tools: [pay.*]\n    per: tenant\n"
        "    per_day: {requests: 5, cost: 2.5}\n    timezone: Europe/Paris\n    warn_at: 0.8\n"
        "    cost: {fixed: 0.01, from_response: {usage_prices: {input_tokens: 0.000003}}}\n"
        "rate_limits:\n  - {id: r, tools: [pay.refund], rate: 10, per_seconds: 1}\n"
    )
    directory = copy_policy_dir(tmp_path / "p", text)
    bundle = build_bundle(directory)
    limits = PolicyLimits.from_bundle_data(bundle.data)
    (budget,) = limits.budgets["pay.charge"]
    assert (budget.requests, budget.cost, budget.fixed_cost, budget.usage_prices) == (
        5,
        2_500_000_000,
        10_000_000,
        {"input_tokens": 3000},
    )
    (rate,) = limits.rate_limits["pay.refund"]
    assert (rate.burst, rate.refill_per_s, rate.on_store_error) == (10, 10.0, "deny")
    assert "pay.charge" not in limits.rate_limits


def test_policies_without_limits_keep_their_bundle_data(tmp_path: Path):
    bundle = build_bundle(copy_policy_dir(tmp_path / "p", TOOLS))
    assert "budgets" not in bundle.data and "rate_limits" not in bundle.data


# --- aegis.yaml: store and store_timeout --------------------------------------------------------


@pytest.mark.parametrize(
    ("store", "ok"),
    [
        ("sqlite:///a.db", True),
        ("redis://127.0.0.1:6379/0", True),
        ("rediss://:s3cret@redis.example:6380/2", True),
        ("redis://localhost", True),
        ("redis:///0", False),
        ("redis://host:99999/0", False),
        ("redis://host:6379/db", False),
        ("memcached://host", False),
    ],
)
def test_store_urls(tmp_path: Path, store: str, ok: bool):
    from helpers import write_config

    from extauthz.config import load_config

    path = write_config(tmp_path, {"store": store})
    if ok:
        assert load_config(path).store == store
    else:
        with pytest.raises(ConfigError) as info:
            load_config(path)
        assert ": store: expected" in info.value.message


def test_store_errors_mask_the_password_and_timeout_is_checked(tmp_path: Path):
    from helpers import write_config

    from extauthz.config import load_config

    with pytest.raises(ConfigError) as info:
        load_config(write_config(tmp_path, {"store": "redis://:hunter2@host:6379/x"}))
    assert "hunter2" not in info.value.message and "***" in info.value.message
    assert load_config(write_config(tmp_path, {"store_timeout": "100ms"})).store_timeout_s == pytest.approx(0.1)
    with pytest.raises(ConfigError, match="store_timeout"):
        load_config(write_config(tmp_path, {"store_timeout": "10s"}))
