"""Python MMU notifiers: registration handles, the C relay's callbacks, and
what an embedder gets when a notifier raises.

A notifier runs inside an mm operation, under the mm's lock, on the thread
doing the operation.  An exception there cannot stop the operation: the
PTEs are already going (``invalidate_range_start`` precedes the zap, and
``invalidate_range_end`` follows it).  So the operation completes, every
other notifier still runs, and the exception is **re-raised by the
operation's Python call once it has completed**, wrapped in
:class:`NotifierError` (whose ``result`` is what the call would have
returned).  A ``KeyboardInterrupt`` or ``SystemExit`` raised in a notifier is
re-raised as itself.

Every exception is also kept on the notifier's handle
(:attr:`NotifierHandle.errors`): that is all there is for an operation made
by a thread outside any Python call of this package (a native thread), and
for an operation that failed (its OSError is raised, with the
:class:`NotifierError` as ``__cause__``).
"""
from __future__ import annotations

import atexit
import errno as _errno
import itertools
import sys
import threading
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

from ._ffi import ffi, lib
from .vm import os_error

if TYPE_CHECKING:  # pragma: no cover
    from .mm import MM

__all__ = ["NotifierError", "NotifierHandle", "clear_stale", "forget_mm", "pending_error",
           "raise_pending", "register"]

_ERESTART = -_errno.ERESTART


def _again(fn: Any, *args: Any) -> Any:
    rc = fn(*args)
    while rc == _ERESTART:      # see address_space._again
        rc = fn(*args)
    return rc


class NotifierError(Exception):
    """One or more MMU notifiers raised during an mm operation that then
    completed.  ``operation`` names the call, ``result`` is what it returned
    (the address of an mmap, say), ``errors`` lists ``(notifier object,
    callback name, exception)``; the first exception is also ``__cause__``."""

    def __init__(self, operation: str, result: Any,
                 errors: "List[Tuple[Any, str, BaseException]]") -> None:
        obj, callback, exc = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        super().__init__(f"{operation}: completed, but MMU notifier {obj!r:.60} raised in "
                         f"{callback}: {type(exc).__name__}: {exc}{more}")
        #: The operation, with its arguments and the mm.
        self.operation = operation
        #: What the operation returned (it completed).
        self.result = result
        #: (notifier object, callback name, exception) in the order raised.
        self.errors = errors


class NotifierHandle:
    """What :meth:`MM.register_notifier` returns; ``unregister()`` removes it."""

    def __init__(self, mm: "MM", token: int, obj: Any, ops: Any) -> None:
        self.mm = mm
        #: The C registration id (0 once unregistered).
        self.id = 0
        self.obj = obj
        #: Exceptions its callbacks raised (the 16 most recent, oldest first).
        self.errors: List[BaseException] = []
        self._token = token
        self._ops = ops   # the C ops structure must outlive the registration

    def unregister(self) -> None:
        """Stop calling the notifier (takes the mm's write lock).  OSError
        EDEADLK, and still registered, if that lock is refused (called from a
        notifier of the same mm, or while this task holds its lock)."""
        if self.id:
            rc = _again(lib.py_mm_unregister_notifier, self.mm._mm, self.id)
            if rc == -_errno.EDEADLK:
                raise os_error(rc, f"unregister of notifier {self.id} on {self.mm._label()}")
        _notifiers.pop(self._token, None)
        self.id = 0


# token -> handle, for the C callbacks (which get the token back as their argument).
_notifiers: Dict[int, NotifierHandle] = {}
_tokens = itertools.count(1)
_notifier_ops: Any = None

# Thread ident -> what notifiers raised during that thread's current operation.
# Truthy only while some thread has something pending: the operations test it
# before anything else, so a call without errors pays one dict truth test.
_pending: "Dict[int, List[Tuple[Any, str, BaseException]]]" = {}


def _handle_of(arg: Any) -> Optional[NotifierHandle]:
    return _notifiers.get(int(ffi.cast("intptr_t", arg)))


def _call(arg: Any, callback: str, *args: Any) -> None:
    h = _handle_of(arg)
    if h is None:
        return
    fn = getattr(h.obj, callback, None)
    if fn is None:
        return
    try:
        fn(*args)
    except BaseException as exc:  # noqa: B902 - kept for the operation's caller
        _pending.setdefault(threading.get_ident(), []).append((h.obj, callback, exc))
        del h.errors[:-15]
        h.errors.append(exc)


def _report(exc_type: Any, exc: Any, tb: Any) -> None:  # pragma: no cover - _call catches
    print(f"mmap_lock_native: exception in an MMU notifier relay: {exc_type.__name__}: {exc}",
          file=sys.stderr)


@ffi.def_extern(onerror=_report)
def _mln_notify_start(mm, start, end, arg):  # type: ignore[no-untyped-def]
    _call(arg, "invalidate_range_start", start, end)


@ffi.def_extern(onerror=_report)
def _mln_notify_end(mm, start, end, arg):  # type: ignore[no-untyped-def]
    _call(arg, "invalidate_range_end", start, end)


@ffi.def_extern(onerror=_report)
def _mln_notify_release(mm, arg):  # type: ignore[no-untyped-def]
    _call(arg, "release")


def clear_stale() -> None:
    """At the start of an operation: drop what a notifier left pending on
    this thread ident outside any Python call (a native thread whose ident
    this one now reuses), so that it is not blamed on this operation."""
    _pending.pop(threading.get_ident(), None)


def pending_error(operation: "str | Any", result: Any = None) -> Optional[BaseException]:
    """What :func:`raise_pending` would raise, taken off this thread."""
    errors = _pending.pop(threading.get_ident(), None)
    if not errors:
        return None
    for _, _, exc in errors:
        if not isinstance(exc, Exception):     # KeyboardInterrupt, SystemExit: as they are
            return exc
    what = operation() if callable(operation) else operation
    err = NotifierError(what, result, errors)
    err.__cause__ = errors[0][2]
    return err


def raise_pending(operation: "str | Any", result: Any = None) -> None:
    """Re-raise what notifiers raised during this thread's operation that
    has just completed (``operation``: its description, or a callable making
    it, so that the common case builds no string).  Nothing if none raised."""
    err = pending_error(operation, result)
    if err is not None:
        raise err


def _ops() -> Any:
    """The C core's static relay ops, forwarding to the callbacks above.
    Registering those (not a Python-owned structure) means an mm freed after
    this interpreter is gone calls nothing that went with it: the relay is
    cleared at exit."""
    global _notifier_ops
    if _notifier_ops is None:
        to = ffi.new("struct mmu_notifier_ops *")
        to.invalidate_range_start = lib._mln_notify_start
        to.invalidate_range_end = lib._mln_notify_end
        to.release = lib._mln_notify_release
        lib.mm_set_notifier_relay(to)
        _notifier_ops = lib.mm_relay_notifier_ops()
        atexit.register(lib.mm_set_notifier_relay, ffi.NULL)
    return _notifier_ops


def register(mm: "MM", obj: Any) -> NotifierHandle:
    """Register ``obj`` as an MMU notifier of ``mm`` (MM.register_notifier)."""
    token = next(_tokens)
    handle = NotifierHandle(mm, token, obj, _ops())
    _notifiers[token] = handle          # before: a callback may come at once
    rc = _again(lib.py_mm_register_notifier, mm._mm, _ops(), ffi.cast("void *", token))
    if rc < 0:
        _notifiers.pop(token, None)         # a racing close may have gone first
        raise os_error(rc, f"register_notifier on {mm._label()}")
    handle.id = rc
    return handle


def forget_mm(mm: "MM") -> None:
    """The mm was closed: its notifiers got their release(); forget them, so
    they do not keep the MM (and what they hold) alive."""
    for token, handle in list(_notifiers.items()):
        if handle.mm is mm:
            handle.id = 0
            _notifiers.pop(token, None)     # a racing register may have gone first
