"""The compiled core (cffi out-of-line API module) and small shared helpers."""
from __future__ import annotations

import errno as _errno
import os
from typing import Any

from ._args import TIMEOUT_MAX, check_timeout

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


def deadline_after(timeout: "float | None", op: str, lock: Any) -> int:
    """Absolute CLOCK_MONOTONIC deadline in ns, ``timeout`` seconds from now
    (None: no deadline).  A timeout that is not None or a number of seconds
    in 0..TIMEOUT_MAX raises TypeError or ValueError naming it, the call
    ``op`` and ``lock`` (an object with ``_label()``: asked only then)."""
    if timeout is None:
        return NO_DEADLINE
    if (type(timeout) is not float and type(timeout) is not int) or \
            not 0 <= timeout <= TIMEOUT_MAX:
        timeout = check_timeout(timeout, lambda: f"{op} on {lock._label()}")
    return int(lib.rwsem_now_ns() + timeout * 1e9)  # type: ignore[operator]


def strerror(rc: int) -> str:
    """'EPERM (Operation not permitted)' for rc = -EPERM."""
    code = -rc
    return f"{_errno.errorcode.get(code, str(code))} ({os.strerror(code)})"
