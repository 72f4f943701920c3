"""HS256 JSON Web Tokens: minting, verifying, and the principal a token names.

Claims: ``sub`` (user id), ``org`` (organization id), ``scopes`` (a list, or a
space-separated string), ``exp`` (expiry, seconds since the epoch), ``iat``.
Scopes: ``publish``, ``subscribe``, ``admin`` (everything within the organization,
including other users' records and publishing on their behalf).
"""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

import jwt
import msgspec

from gateway.errors import Forbidden, Unauthorized

SCOPES = ("publish", "subscribe", "admin")
ALGORITHM = "HS256"


class Principal(msgspec.Struct, frozen=True):
    user_id: str
    organization_id: str
    scopes: frozenset[str]
    expires_at: float
    """Seconds since the epoch."""

    @property
    def is_admin(self) -> bool:
        return "admin" in self.scopes

    def require(self, scope: str) -> None:
        if scope not in self.scopes and not self.is_admin:
            raise Forbidden(
                f"The token lacks the {scope!r} scope (it has: "
                f"{', '.join(sorted(self.scopes)) or 'none'}); mint one with "
                f"`agentmem-gateway token --scopes {scope}`."
            )


class TokenAuthority:
    """Mints and verifies tokens with one secret."""

    def __init__(self, secret: str) -> None:
        self._secret = secret

    @classmethod
    def from_settings(cls, secret: str | None, data_dir: Path) -> TokenAuthority:
        return cls(secret if secret is not None else development_secret(data_dir))

    def mint(
        self,
        user_id: str,
        organization_id: str,
        scopes: tuple[str, ...] = ("publish", "subscribe"),
        ttl_s: float = 3_600,
    ) -> str:
        unknown = [s for s in scopes if s not in SCOPES]
        if unknown:
            raise ValueError(f"unknown scope {unknown[0]!r}; accepted: {', '.join(SCOPES)}")
        if not user_id or not organization_id:
            raise ValueError("a token needs a user id and an organization id")
        now = int(time.time())
        claims = {
            "sub": user_id,
            "org": organization_id,
            "scopes": list(scopes),
            "iat": now,
            "exp": now + int(ttl_s),
        }
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM)

    def verify(self, token: str) -> Principal:
        """The principal of a valid token; ``Unauthorized`` says why a token is refused."""
        if not token:
            raise Unauthorized("No token: send `Authorization: Bearer <token>`.")
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                options={"require": ["exp", "sub", "org"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("The token has expired; mint a new one.") from None
        except jwt.InvalidSignatureError:
            raise Unauthorized(
                "The token's signature does not match this gateway's secret."
            ) from None
        except jwt.MissingRequiredClaimError as exc:
            raise Unauthorized(f"The token lacks the {exc.claim!r} claim.") from None
        except jwt.InvalidTokenError as exc:
            raise Unauthorized(f"The token is not a valid HS256 JWT: {exc}.") from None
        scopes = claims.get("scopes", [])
        if isinstance(scopes, str):
            scopes = scopes.split()
        if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
            raise Unauthorized("The token's 'scopes' claim must be a list of strings.")
        sub, org = claims["sub"], claims["org"]
        if not isinstance(sub, str) or not isinstance(org, str) or not sub or not org:
            raise Unauthorized("The token's 'sub' and 'org' claims must be non-empty strings.")
        return Principal(
            user_id=sub,
            organization_id=org,
            scopes=frozenset(scopes),
            expires_at=float(claims["exp"]),
        )


def development_secret(data_dir: Path) -> str:
    """A random secret kept in ``<data_dir>/jwt-secret`` (created with mode 0600)."""
    path = data_dir / "jwt-secret"
    try:
        return path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        # Another process created it first: use theirs.
        return path.read_text(encoding="ascii").strip()
    with os.fdopen(fd, "w", encoding="ascii") as file:
        file.write(secret)
    return secret
