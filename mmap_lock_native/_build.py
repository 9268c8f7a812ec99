"""cffi build script: compiles the C core of csrc/ into ``mmap_lock_native._native``.

Out-of-line API mode.  The cdef is not written twice: it is the text between
``/* cffi:begin */`` and ``/* cffi:end */`` in the public headers of csrc/,
which hold only declarations cffi can parse.  Structures whose layout is the
C compiler's business are declared to cffi as ``{ ...; }``.
"""
from __future__ import annotations

import os
import re

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.normpath(os.path.join(HERE, "..", "csrc"))

# Public headers, in dependency order, and the C files of the core.
HEADERS = ["task.h", "rwsem.h"]
SOURCES = ["task.c", "rwsem.c"]
OPAQUE_STRUCTS = ["rw_semaphore"]

_BLOCK = re.compile(r"/\* cffi:begin \*/(.*?)/\* cffi:end \*/", re.S)


def cdef_text() -> str:
    """The cffi declarations: opaque structs, then each header's cffi block."""
    parts = [f"struct {name} {{ ...; }};" for name in OPAQUE_STRUCTS]
    for header in HEADERS:
        with open(os.path.join(CSRC, header), encoding="utf-8") as f:
            blocks = _BLOCK.findall(f.read())
        if not blocks:
            raise RuntimeError(f"{header}: no /* cffi:begin */ ... /* cffi:end */ block")
        parts.extend(blocks)
    return "\n".join(parts)


ffibuilder = FFI()
ffibuilder.cdef(cdef_text())
ffibuilder.set_source(
    "mmap_lock_native._native",
    "\n".join(f'#include "{h}"' for h in HEADERS),
    sources=[os.path.relpath(os.path.join(CSRC, s)) for s in SOURCES],
    include_dirs=[os.path.relpath(CSRC)],
    define_macros=[("_GNU_SOURCE", None)],
    extra_compile_args=["-std=c11", "-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
