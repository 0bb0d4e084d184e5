"""The authorization table covers every route the application serves, and decides as documented."""

from __future__ import annotations

from pathlib import Path

import aiohttp
from auth_testlib import create_key, running, settings_for

from appliance.app import create_app
from appliance.auth.policy import OPEN, PREFIX_SCOPES, ROUTE_SCOPES
from appliance.auth.principal import ANONYMOUS, Principal, parse_scopes


def test_every_route_has_a_decision(tmp_path: Path) -> None:
    app = create_app(settings_for(tmp_path, tmp_path / "state"))
    canonical = {resource.canonical for resource in app.router.resources()}
    undecided = [c for c in canonical if c not in ROUTE_SCOPES and not any(c.startswith(p) for p, _ in PREFIX_SCOPES)]
    assert not undecided, f"add these routes to appliance/auth/policy.py: {undecided}"
    opened = sorted(c for c in canonical if ROUTE_SCOPES.get(c) == OPEN)
    assert opened == ["/", "/status/{asset}", "/v2/health/live", "/v2/health/ready"]


def test_principals_and_scope_parsing() -> None:
    scopes, models = parse_scopes("infer:digits read other-service:thing", strict=False)
    alice = Principal("alice", scopes, models, "jwt")
    assert alice.may("infer", "digits") and not alice.may("infer", "other") and not alice.may("admin")
    assert ANONYMOUS.may("audit") and ANONYMOUS.may("infer", "anything")


async def test_status_shell_is_open_and_its_data_needs_read(repository: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    key = create_key(state, "dash", "read")
    async with running(settings_for(repository, state)) as url, aiohttp.ClientSession() as session:
        async with session.get(f"{url}/") as response:
            assert response.status == 200
        async with session.get(f"{url}/v2/status") as response:
            assert response.status == 401
        async with session.get(f"{url}/v2/status", headers={"Authorization": f"Bearer {key}"}) as response:
            assert response.status == 200
        async with session.get(f"{url}/metrics") as response:
            assert response.status == 401
