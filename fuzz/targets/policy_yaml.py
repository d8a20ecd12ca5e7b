"""Target: the policy YAML loader, end to end as a reload runs it.

read (``source.py``) → parse and validate (``parser.py``) → bundle data (``generator``) →
bundle → activation with the native engine (regexes compiled, tools compiled).

Promise, for any bytes in a policy file: either the policy loads, or the load fails with
a ``PolicyError`` whose message starts with ``<file>:<line>: `` — never another exception
and never a hang (libFuzzer's -timeout catches those in the atheris harness).
"""

from __future__ import annotations

import atexit
import re
import shutil
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from extauthz.authorizer import activate
from extauthz.errors import PolicyError
from extauthz.policy.bundle import build_bundle
from fuzz.targets import FuzzFailure
from fuzz.targets.service import POLICIES

SEEDS = tuple(sorted(POLICIES.glob("*.yaml")))


@dataclass(frozen=True)
class Case:
    text: bytes  # the fuzzed policy file
    with_repo_policies: bool = False  # loaded next to the repo's own files (cross-file checks)


@cache
def workdir() -> Path:
    directory = Path(tempfile.mkdtemp(prefix="aegis-fuzz-policy-"))
    atexit.register(shutil.rmtree, directory, True)
    shutil.copytree(POLICIES / "lib", directory / "alone" / "lib")
    shutil.copytree(POLICIES / "lib", directory / "merged" / "lib")
    for seed in SEEDS:
        shutil.copy(seed, directory / "merged" / seed.name)
    return directory


def exercise(case: Case) -> bool:
    """Load the case; True if it loaded, False if refused with a located PolicyError."""
    directory = workdir() / ("merged" if case.with_repo_policies else "alone")
    path = directory / "zz-fuzzed.yaml"
    path.write_bytes(case.text)
    try:
        policy = activate(build_bundle(directory), "native")
    except PolicyError as error:
        if not re.match(r"\S+\.yaml:\d+: ", error.message):
            raise FuzzFailure(f"PolicyError without file:line: {error.message[:200]!r}") from error
        return False
    if not policy.catalogue:
        raise FuzzFailure("a policy loaded without a catalogue")
    return True
