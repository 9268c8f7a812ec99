"""Linux's memory system calls with the syscall ABI, for an emulator's
syscall handler: arguments are register values, the result is what the
guest's ``rax`` (or ``x0``) gets, a value or ``-errno``; a guest's error is
never an exception.

Register values are taken as the kernel takes them: 64-bit unsigned, or the
low 32 bits for an ``int`` argument (``prot``, ``flags``, ``fd``,
``advice``).  A value that is no register (not an int, or outside
-2**63..2**64-1) is the embedder's error: TypeError or ValueError naming it.
So is a refusal of the mm's lock (EDEADLK: a call from a notifier, or from
inside the guest), and a call on a host-backed mm a host fork() copied
into this process (ESTALE), which the guest could not have caused.

Only anonymous memory exists here: ``sys_mmap`` without ``MAP_ANONYMOUS``
returns ``-EBADF`` whatever the descriptor, as for a closed one (there is no
file table), and its offset must still be page aligned (``-EINVAL``).
"""
from __future__ import annotations

import errno as _errno
from typing import Any, Callable, Tuple

from ._args import int_in
from ._ffi import lib
from .address_space import _again
from .notifiers import _pending, clear_stale, raise_pending
from .vm import MAP_ANONYMOUS, PAGE_SIZE, os_error

__all__ = ["Syscalls"]

_U64 = (1 << 64) - 1
_REG = (-(1 << 63), _U64)
#: Refusals the guest cannot have caused: raised, never returned to it.
_EMBEDDER_ERRORS = (-_errno.EDEADLK, -_errno.ESTALE)


def _regs(mm: "Syscalls", op: str, names: Tuple[str, ...], *values: Any) -> Tuple[int, ...]:
    """Register values as the kernel's unsigned long; the error names the
    argument and the call."""
    for v in values:
        if type(v) is not int or not 0 <= v <= _U64:
            break
    else:
        return values       # the common case, checked cheaply: a syscall hook's hot path
    where = mm._where(op)
    return tuple(int_in(v, n, where, *_REG) & _U64 for v, n in zip(values, names))


def _i32(value: int) -> int:
    """A register value as the kernel's int: the low 32 bits, signed."""
    return ((value & 0xFFFFFFFF) ^ 0x80000000) - 0x80000000


class Syscalls:
    """Mixin of :class:`MM`: ``sys_mmap``, ``sys_munmap``, ``sys_mprotect``,
    ``sys_brk``, ``sys_madvise`` and ``sys_mremap``."""

    __slots__ = ()
    _mm: Any

    def _label(self) -> str:  # pragma: no cover - MM overrides
        raise NotImplementedError

    def _where(self, name: str) -> str:
        return f"{name} on {self._label()}"

    def _sys(self, name: str, fn: Callable[..., int], *args: Any) -> int:
        if _pending:
            clear_stale()
        rc = int(_again(fn, self._mm, *args))
        if rc in _EMBEDDER_ERRORS:
            raise os_error(rc, f"{name} on {self._label()}")
        if _pending:
            raise_pending(lambda: f"{name} on {self._label()}", rc)
        return rc

    def sys_mmap(self, addr: Any, length: Any, prot: Any, flags: Any, fd: Any,
                 offset: Any) -> int:
        """mmap(2): the address, or -errno."""
        addr, length, prot, flags, fd, offset = _regs(
            self, "sys_mmap", ("addr", "length", "prot", "flags", "fd", "offset"),
            addr, length, prot, flags, fd, offset)
        if offset & (PAGE_SIZE - 1):
            return -_errno.EINVAL       # the arch's sys_mmap() checks it first
        flags = _i32(flags)
        if not flags & MAP_ANONYMOUS:
            return -_errno.EBADF        # no files here: every descriptor is closed
        return self._sys("sys_mmap", lib.py_mm_mmap, addr, length, _i32(prot), flags)

    def sys_munmap(self, addr: Any, length: Any) -> int:
        """munmap(2): 0, or -errno."""
        return self._sys("sys_munmap", lib.py_mm_munmap,
                         *_regs(self, "sys_munmap", ("addr", "length"), addr, length))

    def sys_mprotect(self, addr: Any, length: Any, prot: Any) -> int:
        """mprotect(2): 0, or -errno (``PROT_GROWSDOWN`` as :meth:`MM.mprotect`)."""
        addr, length, prot = _regs(self, "sys_mprotect", ("addr", "length", "prot"),
                                   addr, length, prot)
        return self._sys("sys_mprotect", lib.py_mm_mprotect, addr, length, _i32(prot))

    def sys_brk(self, addr: Any) -> int:
        """brk(2): the new break, or the current one if refused (never an errno)."""
        return self._sys("sys_brk", lib.py_mm_brk, *_regs(self, "sys_brk", ("addr",), addr))

    def sys_madvise(self, addr: Any, length: Any, advice: Any) -> int:
        """madvise(2): 0, or -errno.  DONTNEED, DONTNEED_LOCKED and FREE drop
        pages (FREE: EINVAL on shared memory); DONTFORK and DOFORK, WIPEONFORK
        (EINVAL on shared memory) and KEEPONFORK set or clear a VMA flag that
        fork honours (the child gets nothing there / the range empty),
        splitting VMAs at the range's edges (EAGAIN past max_map_count);
        POPULATE_READ and POPULATE_WRITE fault the range in (EINVAL where the
        protection forbids the access); NORMAL, RANDOM, SEQUENTIAL, WILLNEED,
        COLD, PAGEOUT, HUGEPAGE, NOHUGEPAGE, DONTDUMP and DODUMP are hints
        (only the range is checked).  A hole in the range: ENOMEM, the mapped
        parts done.  Other advice is EINVAL, as from a kernel built without
        it."""
        addr, length, advice = _regs(self, "sys_madvise", ("addr", "length", "advice"),
                                     addr, length, advice)
        return self._sys("sys_madvise", lib.py_mm_madvise, addr, length, _i32(advice))

    def sys_mremap(self, addr: Any, old_length: Any, new_length: Any, flags: Any,
                   new_addr: Any = 0) -> int:
        """mremap(2) (MREMAP_MAYMOVE, MREMAP_FIXED, MREMAP_DONTUNMAP): the
        new address, or -errno as Linux gives it."""
        addr, old_length, new_length, flags, new_addr = _regs(
            self, "sys_mremap", ("addr", "old_length", "new_length", "flags", "new_addr"),
            addr, old_length, new_length, flags, new_addr)
        return self._sys("sys_mremap", lib.py_mm_mremap, addr, old_length, new_length,
                         _i32(flags), new_addr)
