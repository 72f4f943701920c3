"""SmartModule params: how they are declared, validated and turned into strings.

Fluvio passes params to ``init`` as a string-to-string map. Clients of the gateway send
JSON, so values are converted first: booleans to ``true``/``false``, numbers to their
shortest text, lists of strings to a comma list (or a JSON array when an item holds a
comma, a form the project's modules also accept). A module with a manifest declares
its params; values are then checked against the declaration, and errors name the
param, the value and what is accepted. A module without one accepts any params.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal

import msgspec

ParamType = Literal["string", "int", "float", "bool", "list"]


class ParamSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str
    type: ParamType = "string"
    default: str | None = None
    """What the module assumes when the param is absent (documentation only)."""
    description: str = ""
    required: bool = False
    choices: tuple[str, ...] = ()
    """For ``string`` and ``list``: the accepted values (any when empty)."""
    minimum: float | None = None
    maximum: float | None = None

    def accepted(self) -> str:
        """What values this param accepts, in words."""
        if self.type in ("int", "float"):
            noun = "an integer" if self.type == "int" else "a number"
            if self.minimum is not None and self.maximum is not None:
                return f"{noun} between {_num(self.minimum)} and {_num(self.maximum)}"
            if self.minimum is not None:
                return f"{noun} of at least {_num(self.minimum)}"
            if self.maximum is not None:
                return f"{noun} of at most {_num(self.maximum)}"
            return noun
        if self.type == "bool":
            return "true or false"
        if self.type == "list":
            base = "a comma list or a JSON array of strings"
            return f"{base} among {', '.join(self.choices)}" if self.choices else base
        return f"one of {', '.join(self.choices)}" if self.choices else "a string"


def _num(x: float) -> str:
    return str(int(x)) if x == int(x) else str(x)


class ParamError(ValueError):
    """A param that is not accepted; ``param`` names it."""

    def __init__(self, message: str, param: str | None) -> None:
        super().__init__(message)
        self.param = param


def to_text(name: str, value: object) -> str:
    """A JSON param value as the string Fluvio passes to ``init``."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return repr(value)
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        if any("," in v for v in value):
            return msgspec.json.encode(list(value)).decode()
        return ",".join(value)
    shown = msgspec.json.encode(value).decode()[:80] if _jsonable(value) else type(value).__name__
    raise ParamError(
        f"param {name!r} must be a string, a number, a boolean or a list of strings, got {shown}",
        name,
    )


def _jsonable(value: object) -> bool:
    try:
        msgspec.json.encode(value)
    except (TypeError, msgspec.EncodeError):
        return False
    return True


def split_list(text: str) -> list[str] | None:
    """Items of a list param (comma list or JSON array of strings); ``None`` if invalid."""
    stripped = text.strip()
    if stripped.startswith("["):
        try:
            items = msgspec.json.decode(stripped, type=list[str])
        except msgspec.DecodeError:
            return None
        return [i for i in items if i]
    return [item.strip() for item in stripped.split(",") if item.strip()]


def check(spec: ParamSpec, text: str) -> str | None:
    """Why ``text`` is not accepted for ``spec``, or ``None`` if it is."""
    if spec.type in ("int", "float"):
        try:
            x = int(text) if spec.type == "int" else float(text)
        except ValueError:
            return spec.accepted()
        if not math.isfinite(x):
            return spec.accepted()
        if spec.minimum is not None and x < spec.minimum:
            return spec.accepted()
        if spec.maximum is not None and x > spec.maximum:
            return spec.accepted()
        return None
    if spec.type == "bool":
        return None if text in ("true", "false") else spec.accepted()
    if spec.type == "list":
        items = split_list(text)
        if items is None:
            return spec.accepted()
        bad = [i for i in items if spec.choices and i not in spec.choices]
        return spec.accepted() if bad else None
    if spec.choices and text not in spec.choices:
        return spec.accepted()
    return None


def validate(
    module: str, declared: Sequence[ParamSpec] | None, given: Mapping[str, object]
) -> dict[str, str]:
    """Check ``given`` against ``declared`` (``None``: any params) and return the string
    map to pass to ``init``. Raises ``ParamError``."""
    params = {}
    for name, value in given.items():
        if not isinstance(name, str) or not name:
            raise ParamError(f"SmartModule {module!r}: param names must be non-empty strings", None)
        params[name] = to_text(name, value)
    if declared is None:
        return params
    by_name = {spec.name: spec for spec in declared}
    for name, text in params.items():
        spec = by_name.get(name)
        if spec is None:
            accepted = ", ".join(by_name) if by_name else "none"
            raise ParamError(
                f"SmartModule {module!r} has no param {name!r}; accepted params: {accepted}",
                name,
            )
        problem = check(spec, text)
        if problem is not None:
            raise ParamError(
                f"param {name!r} of SmartModule {module!r} must be {problem}, got {text!r}",
                name,
            )
    for spec in declared:
        if spec.required and spec.name not in params:
            what = f" ({spec.description})" if spec.description else ""
            raise ParamError(
                f"SmartModule {module!r} needs param {spec.name!r}{what}: {spec.accepted()}",
                spec.name,
            )
    return params
