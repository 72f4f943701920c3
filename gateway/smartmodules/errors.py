"""The errors a SmartModule can cause, from loading it to running a batch through it.

``SmartModuleError`` is a ``GatewayError``: each subclass has a stable ``code`` and a
message naming the module, the problem and the fix, so the gateway can hand it to a
client as is.

While processing, Fluvio distinguishes two failures and so does the engine:

- a **hard error** (``SmartModuleHardError`` and subclasses): a negative status, a
  trap, exhausted fuel, the memory cap, or output that cannot be decoded. The whole
  call fails, nothing is delivered, and the chain's instances are recycled so the next
  call starts clean;
- a **soft error** (``SmartModuleRecordError``): the module reported one failing record.
  The records produced before it are delivered (``successes``), then the error, which
  carries the failing record's ``offset``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from gateway.errors import GatewayError

if TYPE_CHECKING:
    from gateway.smartmodules.batch import OutputRecord
    from gateway.streamlog.interface import Record


class SmartModuleError(GatewayError):
    """Base of every SmartModule error; ``module`` names the module when known."""

    code = "smartmodule_error"
    http_status = 422

    def __init__(self, message: str, *, module: str | None = None) -> None:
        super().__init__(message)
        self.module = module


class SmartModuleLoadError(SmartModuleError):
    """The bytes are not a usable SmartModule (invalid wasm, missing exports or imports)."""

    code = "smartmodule_invalid"


class UnknownSmartModule(SmartModuleError):
    code = "unknown_smartmodule"
    http_status = 404


class InvalidSmartModuleParams(SmartModuleError):
    """A param is not declared by the module or its value is not accepted."""

    code = "invalid_smartmodule_params"
    http_status = 400

    def __init__(self, message: str, *, module: str | None = None, param: str | None = None):
        super().__init__(message, module=module)
        self.param = param


class SmartModuleInitError(SmartModuleError):
    """``init`` refused the params (or failed): the chain cannot start."""

    code = "smartmodule_init_failed"

    def __init__(self, message: str, *, module: str, status: int | None, hint: str = ""):
        super().__init__(message, module=module)
        self.status = status
        self.hint = hint


class SmartModuleLookBackError(SmartModuleError):
    """``look_back`` failed on the history it was given: the chain cannot start."""

    code = "smartmodule_look_back_failed"

    def __init__(
        self,
        message: str,
        *,
        module: str,
        status: int | None,
        hint: str = "",
        offset: int | None = None,
    ) -> None:
        super().__init__(message, module=module)
        self.status = status
        self.hint = hint
        self.offset = offset


class SmartModuleClosed(SmartModuleError):
    code = "smartmodule_closed"


class SmartModuleHardError(SmartModuleError):
    """A call failed as a whole; ``status`` is the negative code the export returned."""

    code = "smartmodule_failed"

    def __init__(self, message: str, *, module: str, status: int | None = None) -> None:
        super().__init__(message, module=module)
        self.status = status


class SmartModuleTrap(SmartModuleHardError):
    """The module trapped (a panic, ``unreachable``, an out-of-bounds access ...)."""

    code = "smartmodule_trap"

    def __init__(self, message: str, *, module: str, trap_code: str | None = None) -> None:
        super().__init__(message, module=module)
        self.trap_code = trap_code


class SmartModuleFuelExhausted(SmartModuleHardError):
    """The call used its whole fuel budget: it loops forever or needs a larger budget."""

    code = "smartmodule_fuel_exhausted"

    def __init__(self, message: str, *, module: str, fuel: int) -> None:
        super().__init__(message, module=module)
        self.fuel = fuel


class SmartModuleMemoryLimit(SmartModuleHardError):
    """The module needed more linear memory than the chain's store may have."""

    code = "smartmodule_memory_limit"

    def __init__(self, message: str, *, module: str, limit_bytes: int) -> None:
        super().__init__(message, module=module)
        self.limit_bytes = limit_bytes


class SmartModuleOutputError(SmartModuleHardError):
    """The module's output cannot be decoded (or it never called ``copy_records``)."""

    code = "smartmodule_bad_output"


class SmartModuleRecordError(SmartModuleError):
    """A soft error: the module failed on one record and said so in its output.

    ``successes`` are the records the chain produced before the failure (deliver them
    first); ``offset``/``partition``/``topic`` locate the failing input record;
    ``remaining`` are the input records that were not processed because of it (the
    ones after the failing record), so a caller may skip the bad record and go on.
    """

    code = "smartmodule_record_error"

    def __init__(
        self,
        message: str,
        *,
        module: str,
        hint: str,
        offset: int,
        topic: str,
        partition: int,
        kind: str,
        key: bytes | None,
        value: bytes,
        successes: Sequence[OutputRecord],
        remaining: Sequence[Record],
    ) -> None:
        super().__init__(message, module=module)
        self.hint = hint
        self.offset = offset
        self.topic = topic
        self.partition = partition
        self.kind = kind
        self.key = key
        self.value = value
        self.successes = list(successes)
        self.remaining = list(remaining)
