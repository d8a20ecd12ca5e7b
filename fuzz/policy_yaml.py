"""atheris harness: the policy YAML loader (see fuzz.targets.policy_yaml).

The input is the policy file itself (seeds: policies/*.yaml and fuzz/corpus/policy_yaml/),
mutated byte-wise with the YAML/policy dictionary fuzz/policy_yaml.dict; its first byte
decides whether the file is loaded alone or next to the repo's policies.

    python -m fuzz policy_yaml --runs 2000
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["extauthz", "yaml", "jsonschema"]):
    from fuzz.targets import policy_yaml as target


def decode(data: bytes) -> target.Case:
    return target.Case(text=data[1:], with_repo_policies=bool(data[:1]) and data[0] % 4 == 0)


def test_one_input(data: bytes) -> None:
    target.exercise(decode(data))


def main(argv: list[str]) -> None:
    target.workdir()
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
