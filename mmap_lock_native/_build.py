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

# The C core's layers, one folder each (csrc/Makefile); every .c in them is core.
LAYERS = ["core", "mmap_lock", "mm", "workload"]
# Public headers with a cffi block, in dependency order.
HEADERS = ["task.h", "rwsem.h", "mm.h", "mm_guest.h", "mm_inval.h", "mmap_lock.h", "mmap_lock_stats.h",
           "mmap_lock_trace.h", "lockdep.h", "workload.h"]
SOURCES = sorted(os.path.join(layer, f) for layer in LAYERS
                 for f in os.listdir(os.path.join(CSRC, layer)) if f.endswith(".c"))


def _header_path(name: str) -> str:
    """The path of a public header, whichever layer's folder holds it."""
    for layer in LAYERS:
        path = os.path.join(CSRC, layer, name)
        if os.path.exists(path):
            return path
    raise RuntimeError(f"{name}: not in any of csrc/{{{','.join(LAYERS)}}}")
# Structures whose layout is the C compiler's business; cffi sees these fields only.
PARTIAL_STRUCTS = {
    "rw_semaphore": "",
    "mm_struct": "struct rw_semaphore mmap_lock; uint32_t mm_closed;",
}
# Linux's constants, taken from the system headers mm.h includes.
SYSTEM_CONSTANTS = "\n".join(f"#define {name} ..." for name in (
    "PROT_NONE", "PROT_READ", "PROT_WRITE", "PROT_EXEC", "PROT_GROWSDOWN", "PROT_GROWSUP",
    "MAP_SHARED", "MAP_PRIVATE",
    "MAP_FIXED", "MAP_ANONYMOUS", "MAP_FIXED_NOREPLACE", "MAP_POPULATE", "MAP_GROWSDOWN",
    "MAP_HUGETLB", "MAP_NORESERVE", "MAP_STACK", "MAP_LOCKED", "MAP_NONBLOCK",
    "MREMAP_MAYMOVE", "MREMAP_FIXED", "MREMAP_DONTUNMAP", "MADV_NORMAL", "MADV_RANDOM",
    "MADV_SEQUENTIAL", "MADV_WILLNEED", "MADV_DONTNEED", "MADV_FREE", "MADV_DONTNEED_LOCKED",
    "MADV_COLD", "MADV_PAGEOUT", "MADV_HUGEPAGE", "MADV_NOHUGEPAGE", "MADV_DONTDUMP", "MADV_DODUMP",
    "MADV_DONTFORK", "MADV_DOFORK", "MADV_WIPEONFORK", "MADV_KEEPONFORK", "MADV_POPULATE_READ",
    "MADV_POPULATE_WRITE",
    "SEGV_MAPERR", "SEGV_ACCERR"))

# Callbacks the C core makes into Python (defined with @ffi.def_extern()).
PYTHON_CALLBACKS = """
extern "Python" const char *_mln_site_hook(void);
extern "Python" void _mln_report_hook(int kind, const char *text);
extern "Python" void _mln_hook_start_locking(struct mm_struct *mm, bool write, void *arg);
extern "Python" void _mln_hook_acquire_returned(struct mm_struct *mm, bool write, bool success,
                                                void *arg);
extern "Python" void _mln_hook_released(struct mm_struct *mm, bool write, void *arg);
extern "Python" void _mln_notify_start(struct mm_struct *mm, uint64_t start, uint64_t end,
                                       void *arg);
extern "Python" void _mln_notify_end(struct mm_struct *mm, uint64_t start, uint64_t end,
                                     void *arg);
extern "Python" void _mln_notify_release(struct mm_struct *mm, void *arg);
"""

_BLOCK = re.compile(r"/\* cffi:begin \*/(.*?)/\* cffi:end \*/", re.S)

# The mm operations Python calls through a signal-aware wrapper (py_NAME): a
# wait for the mm's lock that a signal interrupts returns -ERESTART with
# nothing done, so that the interpreter runs its handlers (Ctrl-C) and the
# call is made again (address_space.py).  Their prototypes come from mm.h.
SIGNAL_AWARE = ["mm_mmap", "mm_munmap", "mm_mprotect", "mm_brk", "mm_madvise", "mm_fork",
                "mm_fault", "mm_access", "mm_get_user_pages", "mm_register_notifier",
                "mm_unregister_notifier", "mm_exit_mmap", "mm_maps", "mm_set_max_map_count",
                "mm_map_count", "mm_get_brk", "mm_mremap", "mm_guest_fault", "mm_guest_access",
                "mm_pin_pages", "mm_host_range", "mm_find_vma", "mm_read_lock", "mm_tlb_register",
                "mm_tlb_unregister"]
# The headers whose prototypes the wrappers may wrap.
_WRAPPED_HEADERS = ["mm.h", "mm_guest.h", "mm_inval.h"]
# A prototype starts at column 0 with its type (comment lines start with " *").
_PROTO = re.compile(r"^(\w[\w ]*?[\s*]+)(\w+)\(([^;]*?)\);", re.M | re.S)


def _signal_aware_wrappers() -> "tuple[str, str]":
    """The wrappers' declarations (for the cdef) and definitions (for the
    extension): each sets the thread's mm_signal_aware around the call."""
    text = ""
    for header in _WRAPPED_HEADERS:
        with open(_header_path(header), encoding="utf-8") as f:
            text += "\n".join(_BLOCK.findall(f.read())) + "\n"
    protos = {m.group(2): (m.group(1).strip(), " ".join(m.group(3).split()))
              for m in _PROTO.finditer(text)}
    decls, defs = [], []
    for name in SIGNAL_AWARE:
        ret, params = protos[name]
        args = ", ".join(p.split()[-1].lstrip("*") for p in params.split(","))
        sep = "" if ret.endswith("*") else " "
        decls.append(f"{ret}{sep}py_{name}({params});")
        defs.append(f"{ret}{sep}py_{name}({params})\n{{\n\tint prev = mm_signal_aware;\n"
                    f"\tmm_signal_aware = 1;\n\t{ret}{sep}r = {name}({args});\n"
                    f"\tmm_signal_aware = prev;\n\treturn r;\n}}")
    return "\n".join(decls), "\n".join(defs)


def cdef_text() -> str:
    """The cffi declarations: partial structs, each header's cffi block, callbacks."""
    parts = [f"struct {name} {{ {fields} ...; }};" for name, fields in PARTIAL_STRUCTS.items()]
    for header in HEADERS:
        with open(_header_path(header), encoding="utf-8") as f:
            blocks = _BLOCK.findall(f.read())
        if not blocks:
            raise RuntimeError(f"{header}: no /* cffi:begin */ ... /* cffi:end */ block")
        parts.extend(blocks)
    parts.append(SYSTEM_CONSTANTS)
    parts.append(PYTHON_CALLBACKS)
    parts.append(_signal_aware_wrappers()[0])
    return "\n".join(parts)


ffibuilder = FFI()
ffibuilder.cdef(cdef_text())
ffibuilder.set_source(
    "mmap_lock_native._native",
    "#include <stdbool.h>\n" + "\n".join(f'#include "{h}"' for h in HEADERS)
    + '\n#include "mm_internal.h"\n' + _signal_aware_wrappers()[1],
    sources=[os.path.relpath(os.path.join(CSRC, s)) for s in SOURCES],
    include_dirs=[os.path.relpath(os.path.join(CSRC, layer)) for layer in LAYERS],
    define_macros=[("_GNU_SOURCE", None)],
    extra_compile_args=["-std=c11", "-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
