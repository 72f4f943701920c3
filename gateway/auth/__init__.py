"""Who is calling: HS256 tokens and the principal they carry."""

from gateway.auth.tokens import Principal, TokenAuthority

__all__ = ["Principal", "TokenAuthority"]
