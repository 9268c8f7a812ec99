"""Debug mode: per-task held locks and the lock-order checker.

``set_debug(True)`` (or ``MMAP_LOCK_DEBUG=1`` in the environment when the
package is imported) makes every mm created afterwards tracked: the
assertions then check that the *current task* holds the lock, and each
acquisition goes through the lock-order checker, the userspace counterpart of
the kernel's lockdep.  Its reports carry the acquisition sites of both locks,
as ``file:line`` of the Python caller.

``set_lockdep_mode("raise")`` (the default) refuses a reported call with
:class:`~mmap_lock_native.LockOrderError` before it touches the lock;
``"warn"`` issues a :class:`LockOrderWarning` and lets the call proceed;
``"off"`` reports nothing (held locks are still tracked).
"""
from __future__ import annotations

import os
import sys
import warnings
from types import FrameType
from typing import Dict, Optional, Tuple

from ._ffi import ffi, lib

__all__ = ["LockOrderWarning", "get_debug", "lockdep_mode", "lockdep_reset", "set_debug",
           "set_lockdep_mode"]

_MODES = {"off": lib.MLN_LOCKDEP_OFF, "warn": lib.MLN_LOCKDEP_WARN,
          "raise": lib.MLN_LOCKDEP_RAISE}
_MODE_NAMES = {v: k for k, v in _MODES.items()}
KINDS = {lib.MLN_LOCKDEP_RECURSION: "recursion", lib.MLN_LOCKDEP_INVERSION: "inversion",
         lib.MLN_LOCKDEP_BAD_UNLOCK: "bad_unlock"}

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
# (filename, line) -> C string kept alive for the process: the checker keeps the pointer.
_sites: Dict[Tuple[str, int], object] = {}


class LockOrderWarning(RuntimeWarning):
    """A lock-order report in ``"warn"`` mode."""


def set_debug(on: bool) -> None:
    """Turn debug mode on or off for mms created from now on."""
    lib.mln_set_debug(1 if on else 0)


def get_debug() -> bool:
    """Whether mms created now are tracked by the checker."""
    return bool(lib.mln_get_debug())


def set_lockdep_mode(mode: str) -> None:
    """Choose what a lock-order report does: ``"raise"``, ``"warn"`` or ``"off"``."""
    if not isinstance(mode, str):
        raise TypeError(f"set_lockdep_mode: mode must be a str ('raise', 'warn' or 'off'), "
                        f"not {type(mode).__name__}")
    if mode not in _MODES:
        raise ValueError(f"set_lockdep_mode: mode must be one of 'raise', 'warn', 'off', "
                         f"not {mode!r}")
    lib.mln_lockdep_set_mode(_MODES[mode])


def lockdep_mode() -> str:
    """The current report mode."""
    return _MODE_NAMES[lib.mln_lockdep_get_mode()]


def lockdep_reset() -> None:
    """Forget every recorded lock dependency and held lock (for tests)."""
    lib.mln_lockdep_reset()


def last_report() -> "tuple[str, str]":
    """The calling thread's last refused call: (kind, text)."""
    kind = KINDS.get(lib.mln_lockdep_last_report_kind(), "")
    return kind, ffi.string(lib.mln_lockdep_last_report()).decode("utf-8", "replace")


def lock_class_id(name: str, what: str) -> int:
    """The checker's class named ``name``, registered on first use.
    ValueError naming ``what`` when the class table is full."""
    cls = int(lib.mln_lockdep_class(name.encode()))
    if cls < 0:
        raise ValueError(f"{what}: the lock-order checker's class table is full "
                         f"({lib.MLN_LOCKDEP_MAX_CLASSES} classes); {name!r} cannot be added")
    return cls


def _caller_site() -> Optional[Tuple[str, int]]:
    """The innermost frame outside this package: where the lock call came from."""
    frame: Optional[FrameType] = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame = frame.f_back
    if frame is None:
        return None
    return frame.f_code.co_filename, frame.f_lineno


@ffi.def_extern(onerror=lambda *exc: None)
def _mln_site_hook():  # type: ignore[no-untyped-def]
    """Called by the checker on each tracked acquisition and release."""
    site = _caller_site()
    if site is None:
        return ffi.NULL
    text = _sites.get(site)
    if text is None:
        text = _sites[site] = ffi.new("char[]", f"{site[0]}:{site[1]}".encode())
    return text


@ffi.def_extern()
def _mln_report_hook(kind, text):  # type: ignore[no-untyped-def]
    """Warn mode: each report becomes a LockOrderWarning at the caller."""
    warnings.warn(ffi.string(text).decode("utf-8", "replace"), LockOrderWarning, stacklevel=2)


lib.mln_lockdep_set_site_hook(lib._mln_site_hook)
lib.mln_lockdep_set_report_hook(lib._mln_report_hook)
if os.environ.get("MMAP_LOCK_DEBUG", "").strip() not in ("", "0"):
    set_debug(True)
