"""The checked-in configs under envoy/ are what the generator renders, and Envoy accepts them.

Regenerate after a deliberate change with ``UPDATE_GOLDEN=1 pytest tests/envoyconfig``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from extauthz.config import AegisConfig, load_config
from extauthz.envoyconfig import render_bootstrap_yaml

REPO = Path(__file__).resolve().parents[2]

# golden file under envoy/ → (aegis config it is rendered from, render options)
GOLDENS: dict[str, tuple[str, dict[str, Any]]] = {
    "support.yaml": ("examples/support/aegis.yaml", {}),
    "support-no-extproc.yaml": ("examples/support/aegis.yaml", {"with_ext_proc": False}),
    # docker-compose.yml: Prometheus scrapes envoy:9902, the stats-only listener.
    "compose.yaml": ("deploy/aegis.compose.yaml", {"metrics_listen": "0.0.0.0:9902"}),
}


def _config(relative: str) -> AegisConfig:
    # env={}: AEGIS_* overrides in the developer's shell must not leak into the goldens.
    return load_config(REPO / relative, env={})


def _render(name: str) -> str:
    source, options = GOLDENS[name]
    return render_bootstrap_yaml(_config(source), **options)


@pytest.mark.parametrize("name", sorted(GOLDENS))
def test_golden_file_matches_generator(name: str) -> None:
    golden = REPO / "envoy" / name
    rendered = _render(name)
    if os.environ.get("UPDATE_GOLDEN") == "1":
        golden.write_text(rendered, encoding="utf-8")
    assert golden.exists(), f"envoy/{name} is missing: run UPDATE_GOLDEN=1 pytest tests/envoyconfig"
    assert golden.read_text(encoding="utf-8") == rendered, (
        f"envoy/{name} is stale: run UPDATE_GOLDEN=1 pytest tests/envoyconfig and review the diff"
    )


@pytest.mark.parametrize("name", sorted(GOLDENS))
def test_golden_file_embeds_no_machine_path(name: str) -> None:
    text = _render(name)
    assert str(REPO) not in text
    assert str(Path.home()) not in text


def _variants() -> dict[str, tuple[AegisConfig, dict[str, Any]]]:
    support = _config("examples/support/aegis.yaml")
    envoy = dataclasses.replace(support.envoy, access_log="logs/access.log")
    variants = {name: (_config(source), options) for name, (source, options) in GOLDENS.items()}
    variants["replicas"] = (support, {"service_endpoints": ["127.0.0.1:9191", "127.0.0.1:9193", "aegis-2:9191"]})
    variants["file-access-log"] = (dataclasses.replace(support, envoy=envoy), {})
    tls_upstreams = {"api.example.com": "https://api.example.com", "tickets.internal": "https://10.0.0.7:8443"}
    variants["https-upstreams"] = (dataclasses.replace(support, upstreams=tls_upstreams), {"with_ext_proc": False})
    variants["no-upstreams"] = (dataclasses.replace(support, upstreams={}), {})
    return variants


@pytest.mark.parametrize("variant", sorted(_variants()))
def test_envoy_accepts_rendered_config(variant: str, tmp_path: Path, envoy_validate: Callable[[Path], None]) -> None:
    config, options = _variants()[variant]
    if variant == "file-access-log":
        # Render against a config living in tmp_path so the relative log path lands there.
        # Envoy opens the file at startup and does not create its directory.
        config = dataclasses.replace(config, path=tmp_path / "aegis.yaml")
        (tmp_path / "logs").mkdir()
    path = tmp_path / f"{variant}.yaml"
    path.write_text(render_bootstrap_yaml(config, **options), encoding="utf-8")
    envoy_validate(path)


def test_rendered_yaml_round_trips_and_is_deterministic() -> None:
    first, second = _render("support.yaml"), _render("support.yaml")
    assert first == second
    assert yaml.safe_load(first)["static_resources"]["clusters"][0]["name"] == "aegis_grpc"
