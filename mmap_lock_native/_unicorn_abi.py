"""libunicorn called directly, for the adapter's per-syscall register access.

The unicorn binding's ``reg_read`` is a ctypes call per register (about a
microsecond each); a syscall hook needs the number and six arguments.
Here they are read in one ``uc_reg_read_batch`` through cffi's ABI mode on
the very library the binding loaded (the same handle: ``dlopen`` of a loaded
path returns it), about 0.8 us for all seven against 2.7 us for one batch
through ctypes.  Where that library cannot be found or lacks the call
(another binding layout), the binding's own calls are used: slower, same
result.
"""
from __future__ import annotations

import ctypes
from typing import Any, List, Optional, Sequence

import cffi

__all__ = ["SyscallRegs", "uc_emu_stop_address", "uclib"]

_ffi = cffi.FFI()
_ffi.cdef("""
    int uc_reg_read_batch(void *uc, int *regs, void **vals, int count);
    int uc_reg_write(void *uc, int regid, const void *value);
""")
_U64 = (1 << 64) - 1
_direct: Optional[Any] = None      # the cffi view of libunicorn, once opened
_tried = False


def uclib() -> Any:
    """The ctypes library the unicorn binding loaded (2.1's layout, then older)."""
    import unicorn as _uc
    for path in ("unicorn.unicorn_py3.unicorn", "unicorn.unicorn"):
        try:
            module = __import__(path, fromlist=["uclib"])
        except ImportError:
            continue
        lib = getattr(module, "uclib", None) or getattr(module, "_uc", None)
        if lib is not None:
            return lib
    raise ImportError("mmap_lock_native.unicorn: cannot find libunicorn in the unicorn "
                      f"package {getattr(_uc, '__version__', '?')}")


def uc_emu_stop_address() -> int:
    """The address of libunicorn's ``uc_emu_stop``: the C kick of a guest thread."""
    return int(ctypes.cast(uclib().uc_emu_stop, ctypes.c_void_p).value or 0)


def _open_direct() -> Optional[Any]:
    """libunicorn through cffi, or None where the binding's library has no
    path or lacks the calls."""
    global _direct, _tried
    if not _tried:
        _tried = True
        path = getattr(uclib(), "_name", None)
        try:
            lib = _ffi.dlopen(path) if path else None
            if lib is not None:
                lib.uc_reg_read_batch, lib.uc_reg_write     # both resolvable, or fall back
            _direct = lib
        except (OSError, AttributeError):
            _direct = None
    return _direct


class SyscallRegs:
    """A syscall's number and arguments read in one call, and its result
    written back, on one Unicorn instance (``handle``: its ``uc_engine *``).

    ``ids``: the number's register, then the arguments'; ``ret``: the
    result's register.  ``direct=False`` uses the binding's calls (the
    fallback, also tested)."""

    def __init__(self, uc: Any, handle: int, ids: Sequence[int], ret: int,
                 direct: bool = True) -> None:
        self.uc = uc
        self.ids_list = tuple(ids)
        self.ret_id = ret
        self.n = len(self.ids_list)
        self.lib = _open_direct() if direct else None
        self.handle = _ffi.cast("void *", handle)
        self.ids = _ffi.new("int[]", list(self.ids_list))
        self.vals = _ffi.new("uint64_t[]", self.n)
        self.ptrs = _ffi.new("void *[]", [self.vals + i for i in range(self.n)])
        self.ret = _ffi.new("uint64_t *")

    def read(self) -> List[int]:
        """The registers' values, in the order of ``ids``."""
        if self.lib is not None and self.lib.uc_reg_read_batch(self.handle, self.ids,
                                                               self.ptrs, self.n) == 0:
            return _ffi.unpack(self.vals, self.n)
        return [self.uc.reg_read(r) for r in self.ids_list]

    def write_result(self, value: int) -> None:
        """Set the result register to ``value`` (an -errno as its two's complement)."""
        value &= _U64
        if self.lib is not None:
            self.ret[0] = value
            if self.lib.uc_reg_write(self.handle, self.ret_id, self.ret) == 0:
                return
        self.uc.reg_write(self.ret_id, value)
