"""The compiled core (cffi out-of-line API module) and small shared helpers."""
from __future__ import annotations

import errno as _errno
import os

try:
    from ._native import ffi, lib
except ImportError as exc:  # pragma: no cover - only without a build
    raise ImportError(
        "mmap_lock_native's C core is not built: install the package with "
        "'pip install .' (or 'pip install -e .') from the project root"
    ) from exc

__all__ = ["ffi", "lib", "NO_DEADLINE", "deadline_after", "strerror"]

#: The C core's "no deadline" (UINT64_MAX).
NO_DEADLINE = (1 << 64) - 1


def deadline_after(timeout: "float | None") -> int:
    """Absolute CLOCK_MONOTONIC deadline in ns, ``timeout`` seconds from now."""
    if timeout is None:
        return NO_DEADLINE
    if timeout != timeout or timeout < 0:  # NaN or negative
        raise ValueError(f"timeout must be None or a number >= 0, not {timeout!r}")
    return int(lib.rwsem_now_ns() + timeout * 1e9)


def strerror(rc: int) -> str:
    """'EPERM (Operation not permitted)' for rc = -EPERM."""
    code = -rc
    return f"{_errno.errorcode.get(code, str(code))} ({os.strerror(code)})"
