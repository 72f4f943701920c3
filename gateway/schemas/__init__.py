"""Typed schemas of everything that travels: event payloads, the envelope, memory records."""
