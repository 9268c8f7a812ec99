"""A small x86-64 guest for the Unicorn adapter's tests, example and
benchmark: the machine code of :data:`SOURCE` (GNU as, Intel syntax),
assembled once and kept here so that nothing needs an assembler at run time
(``tests/test_unicorn_guest.py`` checks that assembling :data:`SOURCE` still
gives :data:`CODE` where ``as`` is installed).

Each entry point takes its arguments in rdi, rsi, rdx, rcx and ends with
``exit(code)``; :data:`ENTRY` gives their offsets in :data:`CODE`.
"""
from __future__ import annotations

from typing import Dict

__all__ = ["CODE", "ENTRY", "SOURCE"]

#: The assembly source.
SOURCE = r"""	.intel_syntax noprefix
	.text
	.globl _start
_start:

# exit(rdi)
sys_exit:
	mov eax, 60
	syscall
	hlt

# page_fault1(rdi = iterations, rsi = pages): mmap, one store per page, munmap
	.globl page_fault1
page_fault1:
	mov r12, rdi
	mov r13, rsi
1:	xor edi, edi
	mov rsi, r13
	shl rsi, 12
	mov edx, 3
	mov r10d, 0x22
	mov r8, -1
	xor r9d, r9d
	mov eax, 9
	syscall
	mov r14, rax
	xor ebx, ebx
2:	mov rdx, rbx
	shl rdx, 12
	mov byte ptr [r14 + rdx], 1
	inc rbx
	cmp rbx, r13
	jb 2b
	mov rdi, r14
	mov rsi, r13
	shl rsi, 12
	mov eax, 11
	syscall
	dec r12
	jnz 1b
	xor edi, edi
	jmp sys_exit

# steady(rdi = base, rsi = pages, rdx = iterations): stores to mapped pages
	.globl steady
steady:
	mov r12, rdx
1:	xor ebx, ebx
2:	mov rdx, rbx
	shl rdx, 12
	add qword ptr [rdi + rdx], 1
	inc rbx
	cmp rbx, rsi
	jb 2b
	dec r12
	jnz 1b
	xor edi, edi
	jmp sys_exit

# mmap1(rdi = iterations): mmap one page, touch it, munmap
	.globl mmap1
mmap1:
	mov r12, rdi
1:	xor edi, edi
	mov esi, 4096
	mov edx, 3
	mov r10d, 0x22
	mov r8, -1
	xor r9d, r9d
	mov eax, 9
	syscall
	mov byte ptr [rax], 1
	mov rdi, rax
	mov esi, 4096
	mov eax, 11
	syscall
	dec r12
	jnz 1b
	xor edi, edi
	jmp sys_exit

# heap(): brk grows by 2 pages, both touched and read back, then shrinks; exit(0) or 1
	.globl heap
heap:
	xor edi, edi
	mov eax, 12
	syscall
	mov r12, rax
	lea rdi, [rax + 8192]
	mov eax, 12
	syscall
	lea rdx, [r12 + 8192]
	cmp rax, rdx
	jne 9f
	mov qword ptr [r12], 0x1111
	mov qword ptr [r12 + 4096], 0x2222
	cmp qword ptr [r12 + 4096], 0x2222
	jne 9f
	mov rdi, r12
	mov eax, 12
	syscall
	cmp rax, r12
	jne 9f
	xor edi, edi
	jmp sys_exit
9:	mov edi, 1
	jmp sys_exit

# protect(): a page written, made read-only, written again: SIGSEGV (SEGV_ACCERR)
	.globl protect
protect:
	xor edi, edi
	mov esi, 4096
	mov edx, 3
	mov r10d, 0x22
	mov r8, -1
	xor r9d, r9d
	mov eax, 9
	syscall
	mov r12, rax
	mov qword ptr [r12], 7
	mov rdi, r12
	mov esi, 4096
	mov edx, 1
	mov eax, 10
	syscall
	mov qword ptr [r12], 8
	xor edi, edi
	jmp sys_exit

# reader(rdi = P, rsi = E): until [E] == -1, read [E] then [P]; a value of P
# equal to [E] (the marker of a mapping munmap has removed) is a stale read: exit(3)
	.globl reader
reader:
1:	mov rax, qword ptr [rsi]
	cmp rax, -1
	je 2f
	mov rcx, qword ptr [rdi]
	test rax, rax
	jz 1b
	cmp rcx, rax
	jne 1b
	mov edi, 3
	jmp sys_exit
2:	xor edi, edi
	jmp sys_exit

# writer(rdi = P, rsi = E, rdx = rounds, rcx = spins): each round maps P
# afresh (MAP_FIXED) with marker k, spins, munmaps it, then publishes k in E
	.globl writer
writer:
	mov r12, rdi
	mov r13, rsi
	mov r14, rdx
	mov r15, rcx
	mov rbx, 1
1:	mov rdi, r12
	mov esi, 4096
	mov edx, 3
	mov r10d, 0x32
	mov r8, -1
	xor r9d, r9d
	mov eax, 9
	syscall
	mov qword ptr [r12], rbx
	mov rcx, r15
2:	dec rcx
	jnz 2b
	mov rdi, r12
	mov esi, 4096
	mov eax, 11
	syscall
	mov qword ptr [r13], rbx
	inc rbx
	dec r14
	jnz 1b
	mov qword ptr [r13], -1
	xor edi, edi
	jmp sys_exit

# forker(rdi = Q): [Q] = 1, fork; the parent writes 2, the child 3, each
# checks it reads back its own; exit(0), or 4 when it reads another's
	.globl forker
forker:
	mov r12, rdi
	mov qword ptr [r12], 1
	mov eax, 57
	syscall
	test rax, rax
	jz 1f
	mov qword ptr [r12], 2
	cmp qword ptr [r12], 2
	jne 9f
	xor edi, edi
	jmp sys_exit
1:	cmp qword ptr [r12], 1
	jne 9f
	mov qword ptr [r12], 3
	cmp qword ptr [r12], 3
	jne 9f
	xor edi, edi
	jmp sys_exit
9:	mov edi, 4
	jmp sys_exit

# watcher(rdi = Q, rsi = E): until [E] == -1, [Q] must be 1 or 2 (the
# parent's values; 3 is the child's): exit(0), or 4
	.globl watcher
watcher:
1:	mov rax, qword ptr [rdi]
	cmp rax, 3
	je 9f
	cmp qword ptr [rsi], -1
	jne 1b
	xor edi, edi
	jmp sys_exit
9:	mov edi, 4
	jmp sys_exit

# remapper(rdi = R, rsi = rounds): MAP_FIXED a fresh page at R, store k,
# read it back: k, or 0 after a racing DONTNEED; anything else: exit(5)
	.globl remapper
remapper:
	mov r12, rdi
	mov r13, rsi
	mov rbx, 1
1:	mov rdi, r12
	mov esi, 4096
	mov edx, 3
	mov r10d, 0x32
	mov r8, -1
	xor r9d, r9d
	mov eax, 9
	syscall
	mov qword ptr [r12], rbx
	mov rax, qword ptr [r12]
	cmp rax, rbx
	je 2f
	test rax, rax
	jnz 9f
2:	inc rbx
	dec r13
	jnz 1b
	xor edi, edi
	jmp sys_exit
9:	mov edi, 5
	jmp sys_exit

# racer(rdi = R, rsi = rounds): madvise(DONTNEED), mprotect read-only, back to read-write
	.globl racer
racer:
	mov r12, rdi
	mov r13, rsi
1:	mov rdi, r12
	mov esi, 4096
	mov edx, 4
	mov eax, 28
	syscall
	mov rdi, r12
	mov esi, 4096
	mov edx, 1
	mov eax, 10
	syscall
	mov rdi, r12
	mov esi, 4096
	mov edx, 3
	mov eax, 10
	syscall
	dec r13
	jnz 1b
	xor edi, edi
	jmp sys_exit

# hello(rdi = buffer, rsi = n): write(1, buffer, n); exit(0)
	.globl hello
hello:
	mov rdx, rsi
	mov rsi, rdi
	mov edi, 1
	mov eax, 1
	syscall
	xor edi, edi
	jmp sys_exit
"""

#: The machine code of SOURCE's .text.
CODE = bytes.fromhex(
    "b83c0000000f05f44989fc4989f531ff4c89ee48c1e60cba0300000041ba2200000049c7c0ffffffff4531c9b8090000"
    "000f054989c631db4889da48c1e20c41c604160148ffc34c39eb72ec4c89f74c89ee48c1e60cb80b0000000f0549ffcc"
    "75ac31ffeb9a4989d431db4889da48c1e20c488304170148ffc34839f372ec49ffcc75e531ffe975ffffff4989fc31ff"
    "be00100000ba0300000041ba2200000049c7c0ffffffff4531c9b8090000000f05c600014889c7be00100000b80b0000"
    "000f0549ffcc75c631ffe931ffffff31ffb80c0000000f054989c4488db800200000b80c0000000f05498d9424002000"
    "004839d0753849c704241111000049c7842400100000222200004981bc24001000002222000075164c89e7b80c000000"
    "0f054c39e0750731ffe9d2feffffbf01000000e9c8feffff31ffbe00100000ba0300000041ba2200000049c7c0ffffff"
    "ff4531c9b8090000000f054989c449c70424070000004c89e7be00100000ba01000000b80a0000000f0549c704240800"
    "000031ffe977feffff488b064883f8ff7417488b0f4885c074ef4839c175eabf03000000e957feffff31ffe950feffff"
    "4989fc4989f54989d64989cf48c7c3010000004c89e7be00100000ba0300000041ba3200000049c7c0ffffffff4531c9"
    "b8090000000f0549891c244c89f948ffc975fb4c89e7be00100000b80b0000000f0549895d0048ffc349ffce75b549c7"
    "4500ffffffff31ffe9e3fdffff4989fc49c7042401000000b8390000000f054885c0741649c704240200000049833c24"
    "02752431ffe9b6fdffff49833c2401751649c704240300000049833c2403750731ffe999fdffffbf04000000e98ffdff"
    "ff488b074883f803740d48833eff75f131ffe979fdffffbf04000000e96ffdffff4989fc4989f548c7c3010000004c89"
    "e7be00100000ba0300000041ba3200000049c7c0ffffffff4531c9b8090000000f0549891c24498b04244839d8740548"
    "85c0750f48ffc349ffcd75c231ffe91dfdffffbf05000000e913fdffff4989fc4989f54c89e7be00100000ba04000000"
    "b81c0000000f054c89e7be00100000ba01000000b80a0000000f054c89e7be00100000ba03000000b80a0000000f0549"
    "ffcd75bf31ffe9c5fcffff4889f24889febf01000000b8010000000f0531ffe9acfcffff"
)

#: Entry point -> offset in CODE.
ENTRY: Dict[str, int] = {
    "forker": 0x21d,
    "heap": 0xcf,
    "hello": 0x33b,
    "mmap1": 0x8b,
    "page_fault1": 0x8,
    "protect": 0x138,
    "racer": 0x2ed,
    "reader": 0x189,
    "remapper": 0x291,
    "steady": 0x66,
    "watcher": 0x271,
    "writer": 0x1b0,
}
