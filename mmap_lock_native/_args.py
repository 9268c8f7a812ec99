"""Checks of arguments that reach the C core: each error names the call, the
argument and the value, before C sees a value its types cannot hold.

Hot paths (a fault, a lock call) do not check first: they let cffi refuse a
value that does not convert, then :func:`bad_args` finds which argument it
was and says why, so a correct call pays nothing for the checks.
"""
from __future__ import annotations

import numbers
import operator
from typing import Any, Callable, Optional, Tuple

__all__ = ["TIMEOUT_MAX", "U64", "C_INT", "as_int", "int_in", "bad_args", "check_timeout",
           "check_name", "flat_writable_bytes"]

#: The C core's integer types, as (lowest, highest).
U64: Tuple[int, int] = (0, (1 << 64) - 1)
C_INT: Tuple[int, int] = (-(1 << 31), (1 << 31) - 1)

#: The longest timeout accepted, in seconds (about 146 years): the deadline, in
#: nanoseconds of the monotonic clock, must fit the C core's 64-bit clock.
TIMEOUT_MAX: float = float((1 << 62) // 10**9)


def _shown(value: Any, in_hex: bool = False) -> str:
    """``repr(value)`` (an int in hex if ``in_hex``), cut short: a wrong
    argument may be a huge object."""
    if isinstance(value, int) and not isinstance(value, bool) and \
            (in_hex or value.bit_length() > 64):
        text = hex(value)  # repr() of a huge int may itself fail (str digits limit)
    else:
        text = repr(value)
    return text if len(text) <= 40 else f"{text[:30]}... ({len(text)} chars)"


def as_int(value: Any, name: str, where: str) -> int:
    """``value`` as an int (anything with ``__index__``); TypeError otherwise."""
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{where}: {name} must be an int, not {type(value).__name__} "
                        f"{_shown(value)}") from None


def int_in(value: Any, name: str, where: str, lo: int, hi: int) -> int:
    """``value`` as an int in ``lo..hi``; TypeError or ValueError naming ``name``."""
    v = as_int(value, name, where)
    if not lo <= v <= hi:
        if hi > 1 << 16:  # addresses and sizes: in hex
            raise ValueError(f"{where}: {name} {_shown(v, True)} is outside {lo:#x}..{hi:#x}")
        raise ValueError(f"{where}: {name} {_shown(v)} is outside {lo}..{hi}")
    return v


def bad_args(where: str, refused: Exception, **args: Tuple[Any, int, int]) -> Exception:
    """After cffi ``refused`` the arguments of a C call: the error naming the
    first of ``args`` (name=(value, lowest, highest)) that is not an int in
    its range.  ``refused`` itself if all are (it came from elsewhere)."""
    for name, (value, lo, hi) in args.items():
        int_in(value, name, where, lo, hi)
    return refused


def check_timeout(timeout: Any, where: Callable[[], str]) -> Optional[float]:
    """``timeout`` if it is None or seconds in 0..TIMEOUT_MAX; otherwise
    TypeError or ValueError naming it (``where()`` names the call)."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real):
        raise TypeError(f"{where()}: timeout must be None or a number of seconds, not "
                        f"{type(timeout).__name__} {_shown(timeout)}")
    seconds: Any = timeout  # a Real: compares with ints and floats (typeshed's Real does not)
    if seconds != seconds:
        raise ValueError(f"{where()}: timeout is NaN")
    if seconds < 0:
        raise ValueError(f"{where()}: timeout {_shown(seconds)} is negative")
    if seconds > TIMEOUT_MAX:
        raise ValueError(f"{where()}: timeout {_shown(seconds)} s is beyond TIMEOUT_MAX "
                         f"({TIMEOUT_MAX:.0f} s); None waits forever")
    return float(seconds)


def check_name(name: Any, what: str) -> Optional[str]:
    """A ``name=`` label: a str or None."""
    if name is not None and not isinstance(name, str):
        raise TypeError(f"{what}: name must be a str or None, not {type(name).__name__} "
                        f"{_shown(name)}")
    return name


def flat_writable_bytes(buffer: Any, where: str) -> memoryview:
    """``buffer`` as one flat, writable run of bytes (``memoryview(buffer).cast("B")``):
    whatever its item size or shape (an ``array('q')``, a 2-D view), offsets into
    it are byte offsets.  TypeError if it is no buffer; ValueError if it is
    read-only or not C-contiguous (a strided slice has gaps the C core would
    write into)."""
    try:
        view = memoryview(buffer)
    except TypeError:
        raise TypeError(f"{where}: buffer must support the buffer protocol (bytearray, "
                        f"mmap, SharedMemory.buf, ...), not {type(buffer).__name__}") from None
    if view.readonly:
        raise ValueError(f"{where}: buffer is read-only ({type(buffer).__name__})")
    if not view.c_contiguous:
        raise ValueError(f"{where}: buffer is not C-contiguous (strides {view.strides}): "
                         f"its bytes are not one run of memory")
    try:
        return view.cast("B")
    except TypeError as exc:  # a format memoryview cannot cast (a struct format, say)
        raise TypeError(f"{where}: buffer of format {view.format!r} cannot be viewed as "
                        f"bytes ({exc})") from None
