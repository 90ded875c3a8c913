"""The service status record and the application context's lookups."""

from __future__ import annotations

import pytest

from gateway.app.config import Config
from gateway.app.context import AppContext
from gateway.app.supervisor import Service, ServiceState, ServiceStatus
from gateway.core.model import ModelStore


class _Dummy:
    name = "dummy"

    async def run(self, ready: object) -> None:
        return None


def test_service_protocol_is_structural() -> None:
    assert isinstance(_Dummy(), Service)
    assert not isinstance(object(), Service)


def test_status_transitions() -> None:
    st = ServiceStatus("x")
    assert st.state is ServiceState.STARTING
    st.mark_ready(now=10.0)
    assert st.state is ServiceState.READY and st.ready_at == 10.0
    st.mark_failed(RuntimeError("boom"), now=11.0)
    assert st.state is ServiceState.FAILED
    assert st.last_error == "RuntimeError: boom"
    assert st.as_dict()["last_error_at"] == 11.0


def test_context_lookups_name_the_known_buses() -> None:
    ctx = AppContext(config=Config(), config_path=None, store=ModelStore([("bus1", 1)]))
    assert ctx.pack_keys == [("bus1", 1)]
    with pytest.raises(KeyError, match="unknown bus 'nope'"):
        ctx.bus_for(("nope", 1))
    with pytest.raises(KeyError, match="unknown bus 'nope'"):
        ctx.poller_for(("nope", 1))
    assert not ctx.all_ready
    ctx.services["a"] = ServiceStatus("a")
    assert not ctx.all_ready
    ctx.services["a"].mark_ready()
    assert ctx.all_ready
    ctx.register_endpoint("http", "http://127.0.0.1:1")
    assert ctx.endpoints == {"http": "http://127.0.0.1:1"}
