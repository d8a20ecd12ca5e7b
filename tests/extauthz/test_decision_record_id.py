"""Decision ids (``decision_record.new_decision_id``): what ``uuid.uuid4().hex`` gives."""

from __future__ import annotations

import uuid

from extauthz.decision_record import new_decision_id


def test_a_decision_id_is_a_random_uuid4_in_hex() -> None:
    ids = [new_decision_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    for value in ids:
        parsed = uuid.UUID(hex=value)
        assert parsed.hex == value and len(value) == 32
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
    # The other 122 bits are random: every hex digit outside the fixed ones shows up everywhere.
    free = [i for i in range(32) if i not in (12, 16)]
    assert all(len({value[i] for value in ids}) == 16 for i in free)
