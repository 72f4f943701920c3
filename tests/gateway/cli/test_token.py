"""``agentmem-gateway token``: tokens the gateway accepts, and refusals."""

from __future__ import annotations

import stat
import time

import pytest
from servers import SECRET

from gateway.auth.tokens import TokenAuthority, development_secret


@pytest.mark.parametrize(
    ("extra", "scopes", "ttl_s"),
    [
        pytest.param([], {"publish", "subscribe"}, 3_600, id="defaults"),
        pytest.param(["--scopes", "admin", "--ttl", "90"], {"admin"}, 90, id="seconds"),
        pytest.param(
            ["--scopes", "publish, subscribe ,admin", "--ttl", "2m"],
            {"publish", "subscribe", "admin"},
            120,
            id="all-scopes-minutes",
        ),
        pytest.param(
            ["--scopes", "subscribe", "--ttl", "7d"], {"subscribe"}, 7 * 86_400, id="days"
        ),
    ],
)
def test_token_is_accepted_with_user_org_scopes_and_ttl(cli, extra, scopes, ttl_s) -> None:
    before = time.time()
    result = cli("token", "--user", "alice", "--org", "acme", *extra)
    after = time.time()
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    principal = TokenAuthority(SECRET).verify(lines[0])
    assert principal.user_id == "alice"
    assert principal.organization_id == "acme"
    assert principal.scopes == frozenset(scopes)
    assert int(before) + ttl_s <= principal.expires_at <= after + ttl_s


def test_token_flag_secret_overrides_the_environment(cli) -> None:
    other = "flag-secret-0123456789abcdef-0123456789"
    result = cli("token", "--user", "u", "--org", "o", "--jwt-secret", other)
    assert result.returncode == 0, result.stderr
    assert TokenAuthority(other).verify(result.stdout.strip()).user_id == "u"


def test_without_a_secret_the_development_secret_is_created_and_used(cli, data_dir) -> None:
    result = cli("token", "--user", "u", "--org", "o", env={"AGENTMEM_JWT_SECRET": None})
    assert result.returncode == 0, result.stderr
    path = data_dir / "jwt-secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    principal = TokenAuthority(development_secret(data_dir)).verify(result.stdout.strip())
    assert (principal.user_id, principal.organization_id) == ("u", "o")
    # The same secret is reused by the next command.
    again = cli("token", "--user", "v", "--org", "o", env={"AGENTMEM_JWT_SECRET": None})
    assert TokenAuthority(path.read_text().strip()).verify(again.stdout.strip()).user_id == "v"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        pytest.param(
            ["--scopes", "publish,root"],
            ["unknown scope 'root'", "publish, subscribe, admin"],
            id="unknown-scope",
        ),
        pytest.param(["--ttl", "5x"], ["--ttl '5x'", "<n>s"], id="bad-ttl"),
    ],
)
def test_bad_token_options_exit_2(cli, args, says) -> None:
    result = cli("token", "--user", "alice", "--org", "acme", *args)
    assert result.returncode == 2
    assert result.stdout == ""
    for text in says:
        assert text in result.stderr


@pytest.mark.parametrize(
    "args",
    [["--org", "acme"], ["--user", "", "--org", "acme"]],
    ids=["no-user", "empty-user"],
)
def test_token_needs_user_and_org(cli, args) -> None:
    result = cli("token", *args)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr
