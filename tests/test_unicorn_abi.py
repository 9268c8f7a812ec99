"""The adapter's direct register access (``mmap_lock_native._unicorn_abi``):
one ``uc_reg_read_batch`` through cffi must read what the binding's
``reg_read`` reads and write what it writes, on both guest architectures,
and the binding's calls (the fallback) must agree with it."""
from __future__ import annotations

import pytest

try:
    import unicorn as uc
except Exception as exc:  # noqa: B902 - missing, or a wheel whose library will not load
    pytest.skip(f"the Unicorn adapter's tests need the unicorn package (pip install "
                f"'mmap-lock-native[unicorn]'): {type(exc).__name__}: {exc}",
                allow_module_level=True)

from mmap_lock_native import _unicorn_abi  # noqa: E402
from mmap_lock_native.unicorn import ARCHES  # noqa: E402

VALUES = (0, 1, 0x7FFF_FFFF_F000, (1 << 63) + 5, (1 << 64) - 1, 9, 0xDEAD_BEEF)


def _engine(arch_name: str):
    arch = ARCHES[arch_name]
    engine = uc.Uc(arch.uc_arch, arch.uc_mode)
    return arch, engine, int(engine._uch.value)


def test_the_direct_path_is_taken_where_the_binding_has_a_library_path():
    assert _unicorn_abi._open_direct() is not None, \
        "libunicorn not opened through cffi: every syscall pays the slow path"


@pytest.mark.parametrize("arch_name", sorted(ARCHES))
@pytest.mark.parametrize("direct", [True, False], ids=["direct", "binding"])
def test_read_returns_each_register_in_order(arch_name, direct):
    arch, engine, handle = _engine(arch_name)
    ids = (arch.nr, *arch.args)
    for reg, value in zip(ids, VALUES):
        engine.reg_write(reg, value)
    regs = _unicorn_abi.SyscallRegs(engine, handle, ids, arch.ret, direct=direct)
    assert (regs.lib is not None) == direct
    assert regs.read() == [engine.reg_read(r) for r in ids] == list(VALUES[:len(ids)])


@pytest.mark.parametrize("arch_name", sorted(ARCHES))
@pytest.mark.parametrize("direct", [True, False], ids=["direct", "binding"])
@pytest.mark.parametrize("result", [0, 42, -12, -(1 << 63), (1 << 64) - 1])
def test_write_result_sets_the_result_register_as_twos_complement(arch_name, direct, result):
    arch, engine, handle = _engine(arch_name)
    regs = _unicorn_abi.SyscallRegs(engine, handle, (arch.nr, *arch.args), arch.ret,
                                    direct=direct)
    regs.write_result(result)
    assert engine.reg_read(arch.ret) == result & ((1 << 64) - 1)

