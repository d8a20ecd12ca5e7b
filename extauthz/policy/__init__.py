"""Policy as code: YAML policy sets compiled into OPA bundles (parse → validate → generate → package)."""

from __future__ import annotations

from extauthz.policy.bundle import Bundle, build_bundle, read_bundle, write_bundle
from extauthz.policy.parser import PolicySet, load_policy_dir

__all__ = ["Bundle", "PolicySet", "build_bundle", "load_policy_dir", "read_bundle", "write_bundle"]
