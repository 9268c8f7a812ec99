"""docs/design.md argues the memory order of every atomic operation in the
core (qemu's arm64 runs in CI cannot: they run with the host's ordering).
This keeps the argument complete: every function of csrc/core that performs
an atomic operation is named in the table of its "Memory orderings" section."""
from __future__ import annotations

import glob
import os
import re
from typing import Dict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: Every source of the core, those added later included.
CORE_FILES = sorted(os.path.relpath(p, ROOT) for pattern in ("*.c", "*.h")
                    for p in glob.glob(os.path.join(ROOT, "csrc", "core", pattern)))
# A function definition at the start of a line: "type name(args)" then "{" on its own line.
DEFINITION = re.compile(r"^[a-z_][\w \t\*]*?\b(\w+)\([^;{]*?\)\s*\n\{", re.M)
ATOMIC = re.compile(r"\batomic_\w+\s*\(")


def functions_with_atomics(path: str) -> Dict[str, int]:
    """name -> number of atomic operations, for each function of a C file."""
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        text = f.read()
    found = {}
    for m in DEFINITION.finditer(text):
        depth, i = 0, m.end() - 1
        while True:  # the body: up to the matching brace
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
            if depth == 0:
                break
        n = len(ATOMIC.findall(text, m.end(), i))
        if n:
            found[m.group(1)] = n
    return found


def ordering_table() -> str:
    with open(os.path.join(ROOT, "docs", "design.md"), encoding="utf-8") as f:
        text = f.read()
    section = text.split("## Memory orderings", 1)[1].split("\n## ", 1)[0]
    return "\n".join(line for line in section.splitlines() if line.startswith("| "))


def test_the_extractor_sees_the_core_atomics() -> None:
    assert {"csrc/core/futex.h", "csrc/core/rwsem_internal.h", "csrc/core/rwsem.c",
            "csrc/core/task.c"} <= set(CORE_FILES)
    rwsem = functions_with_atomics("csrc/core/rwsem.c")
    assert {"rwsem_grant_readers", "up_write_private", "downgrade_write"} <= set(rwsem)
    assert "mln_mutex_unlock" in functions_with_atomics("csrc/core/futex.h")


def test_every_core_function_with_an_atomic_is_in_the_ordering_table() -> None:
    table = ordering_table()
    missing = [f"{path}: {name}" for path in CORE_FILES
               for name in functions_with_atomics(path) if f"`{name}`" not in table]
    assert missing == []
