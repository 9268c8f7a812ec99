"""Every ```python block of README.md and docs/*.md runs as it stands.

Each block runs alone in a fresh interpreter (a block must import what it
uses), in an empty working directory, within a time bound: an example that
hangs, fails or depends on an earlier block fails here.  A block that only
sketches must still run (its ``...`` are Ellipsis).
"""
from __future__ import annotations

import glob
import os
import re
import subprocess
import sys
from typing import List, Tuple

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCUMENTS = ["README.md"] + sorted(os.path.relpath(p, ROOT)
                                   for p in glob.glob(os.path.join(ROOT, "docs", "*.md")))
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
#: A generous bound for one example on a loaded 2-core machine.
EXAMPLE_TIMEOUT = 60


def python_blocks(path: str) -> List[Tuple[int, str]]:
    """(first line number, code) of each ```python block of a Markdown file."""
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        text = f.read()
    return [(text.count("\n", 0, m.start()) + 2, m.group(1)) for m in BLOCK.finditer(text)]


EXAMPLES = [(f"{path}:{line}", code) for path in DOCUMENTS for line, code in python_blocks(path)]


def test_the_extractor_finds_the_readmes_examples() -> None:
    assert len(python_blocks("README.md")) >= 3
    assert all(code.strip() for _, code in EXAMPLES)


@pytest.mark.parametrize("code", [code for _, code in EXAMPLES],
                         ids=[where for where, _ in EXAMPLES])
def test_example_runs_alone(code: str, tmp_path: "os.PathLike[str]") -> None:
    env = dict(os.environ)
    env.pop("MMAP_LOCK_DEBUG", None)
    try:
        out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=EXAMPLE_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the example did not finish within {EXAMPLE_TIMEOUT} s")
    assert out.returncode == 0, f"exit status {out.returncode}\n{out.stderr[-3000:]}"


MARKDOWN = DOCUMENTS + ["benchmarks/README.md"]
CITED = re.compile(r"`([\w./-]+\.md)`|\]\(([\w./-]+\.md)\)")


@pytest.mark.parametrize("path", MARKDOWN)
def test_every_cited_document_is_in_the_repository(path: str) -> None:
    """A document cites only Markdown files this repository has (from its root
    or from the citing file's folder): no reader is sent to a file they cannot open."""
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        cited = {a or b for a, b in CITED.findall(f.read())}
    here = os.path.dirname(os.path.join(ROOT, path))
    missing = [c for c in sorted(cited) if not os.path.exists(os.path.join(ROOT, c))
               and not os.path.exists(os.path.join(here, c))]
    assert missing == []
