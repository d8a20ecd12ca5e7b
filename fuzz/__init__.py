"""Coverage-guided fuzzing of the Aegis trust boundaries (atheris / libFuzzer).

One harness per target, each a module run with ``python -m``:

    fuzz.check        the ext_authz Check handler (well-typed CheckRequests)
    fuzz.ext_proc     the ext_proc handler (ProcessingRequest sequences) + redactor
    fuzz.policy_yaml  the policy YAML loader (source -> parser -> bundle -> native engine)
    fuzz.jwt          the JWT verifier wrapper (extauthz/identity.py)
    fuzz.dlp_scan     dlp.scan / dlp.redact

What each target promises (the oracle a run checks) lives in ``fuzz.targets.<name>``,
shared with the bounded hypothesis tests in ``tests/fuzz/``.  Seed corpora are in
``fuzz/corpus/<target>/``.  Run one with ``python -m fuzz <target> --runs N --max-time S``
(see ``fuzz/__main__.py`` and docs/security.md "Fuzzing").
"""

from __future__ import annotations

TARGETS = ("check", "ext_proc", "policy_yaml", "jwt", "dlp_scan")
