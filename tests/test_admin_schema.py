"""Property test of the admin API from its own OpenAPI document (schemathesis): generated requests,
valid and invalid, against the gateway served on a real socket with the simulator behind it, never
get a 5xx. Half of the generated pack paths are pointed at real packs so the handlers run deep.
Bounded: a few examples per operation, no shrinking, no example database."""

from __future__ import annotations

from collections.abc import Iterator

import hypothesis.strategies as st
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings

from gateway.ops.security.auth import Role
from tests.admin_support import ThreadedGateway

EXAMPLES_PER_OPERATION = 10


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedGateway]:
    with ThreadedGateway(tmp_path_factory.mktemp("schema")) as gw:
        yield gw


def test_the_admin_api_never_answers_5xx(gateway: ThreadedGateway) -> None:
    schema = schemathesis.openapi.from_url(f"{gateway.url}/api/openapi.json")
    operations = [r.ok() for r in schema.get_all_operations()]
    admin_ops = [op for op in operations if "admin" in (op.tags or [])]
    assert len(admin_ops) >= 20, [op.path for op in admin_ops]
    headers = {"Authorization": f"Bearer {gateway.token(Role.FACTORY)}"}
    seen: list[tuple[str, str, int]] = []

    for op in admin_ops:

        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(data=st.data())
        def check(data: st.DataObject) -> None:
            case = data.draw(op.as_strategy())  # noqa: B023 - bound for this loop iteration
            if "bus" in (case.path_parameters or {}) and data.draw(st.booleans()):
                case.path_parameters = {"bus": "sim", "address": data.draw(st.sampled_from([1, 2, 3]))}
            response = case.call(base_url=gateway.url, headers=headers, timeout=30)
            seen.append((case.method, case.path, response.status_code))
            assert response.status_code < 500, (
                f"{case.method} {case.formatted_path} {case.body!r}: {response.status_code} {response.text}"
            )

        check()
    statuses = {code for _, _, code in seen}
    assert 200 in statuses and 422 in statuses  # both accepted and refused requests were exercised
    assert len(seen) >= len(admin_ops) * 2
