"""Which records a principal may see: its organization's, and its own user's unless admin.

The rule is applied to every record the gateway hands out (HTTP reads, and every delivery on
a WebSocket subscription) whatever filters the client chose.
"""

from __future__ import annotations

import msgspec

from gateway.auth.tokens import Principal


class _Owner(msgspec.Struct):
    organization_id: str | None = None
    user_id: str | None = None


_owner_decoder = msgspec.json.Decoder(_Owner)


def record_owner(value: bytes) -> tuple[str | None, str | None]:
    """(organization_id, user_id) of an envelope-shaped JSON record; (None, None) otherwise."""
    try:
        owner = _owner_decoder.decode(value)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None, None
    return owner.organization_id, owner.user_id


def visible_to(principal: Principal, value: bytes) -> bool:
    organization_id, user_id = record_owner(value)
    if organization_id != principal.organization_id:
        return False
    return principal.is_admin or user_id == principal.user_id
