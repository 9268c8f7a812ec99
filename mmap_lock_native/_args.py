"""Checks of arguments that reach the C core: each error names the call, the
argument and the value, before C sees a value its types cannot hold."""
from __future__ import annotations

import operator
from typing import Any

__all__ = ["as_int", "flat_writable_bytes"]


def _shown(value: Any) -> str:
    """``repr(value)``, cut short: a wrong argument may be a huge object."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def as_int(value: Any, name: str, where: str) -> int:
    """``value`` as an int (anything with ``__index__``); TypeError otherwise."""
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{where}: {name} must be an int, not {type(value).__name__} "
                        f"{_shown(value)}") from None


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
