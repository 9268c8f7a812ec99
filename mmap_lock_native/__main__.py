"""``python -m mmap_lock_native bench ...``: see :mod:`mmap_lock_native.bench_cli`."""
from __future__ import annotations

import sys


def _main(argv: "list[str]") -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python -m mmap_lock_native bench [options]   (bench --help for them)")
        return 0 if argv else 2
    if argv[0] != "bench":
        print(f"python -m mmap_lock_native: unknown command {argv[0]!r}; the command is "
              "'bench'", file=sys.stderr)
        return 2
    from .bench_cli import main
    return main(argv[1:])


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
