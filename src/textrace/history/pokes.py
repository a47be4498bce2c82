"""What each TEXT_POKE was: the kernel mechanism that patched the text, read from the bytes
and from what was at the address and at the target when it happened.

x86-64 kernels (5.9+) emit PERF_RECORD_TEXT_POKE from text_poke_bp_batch() (jump labels,
static calls, ftrace, BPF trampolines and tail calls: all go through text_poke_bp or
text_poke_queue) and from kprobes and ftrace's own paths:

- jump_label: arch_jump_label_transform swaps a 5-byte NOP (0f 1f 44 00 00) and `jmp rel32`,
  or the 2-byte pair 66 90 / `jmp rel8`, at a site in kernel or module text.
- ftrace: ftrace_replace_code swaps the NOP at a function's first instruction (after
  endbr64 with IBT) and `call ftrace_caller`, `ftrace_regs_caller` or an ftrace trampoline;
  ftrace_update_ftrace_func repatches the calls inside those; a new ftrace_trampoline (an
  OOL ksym) is announced as a poke with no old bytes.  A direct call from the site to a
  bpf_trampoline_* image is BPF's fentry/fexit attachment (bpf_trampoline).
- static_call: __static_call_transform rewrites the `jmp` (or `ret`) of a __SCT__*
  trampoline, and inline call sites (`call __SCT__x` -> `call f` -> NOP for NULL).
- bpf_trampoline / bpf_dispatcher: bpf_arch_text_poke on a trampoline or dispatcher image,
  into one (fentry, freplace, XDP dispatch), or at a BPF program's entry NOP.
- tail_call: prog_array_map_poke_run patches a JIT'd program's direct tail call: the NOP at
  the poke site becomes `jmp` to the target program past its prologue, and the bypass
  `jmp` becomes a NOP, and back.
- kprobe: arch_arm_kprobe writes INT3 (0xcc) over the first byte, disarm puts it back;
  optimized kprobes swap INT3+tail and `jmp` into a kprobe_optinsn_page; the instruction
  slots in kprobe_insn_page / kprobe_optinsn_page are announced as pokes with no old (or
  no new) bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

from .code_history import CodeHistory, Poke, Symbol
from .x86 import x86_64

KINDS = ("jump_label", "ftrace", "static_call", "bpf_trampoline", "bpf_dispatcher",
         "tail_call", "kprobe", "unknown")

NOP5 = bytes.fromhex("0f1f440000")   # x86_nops[5]: jump labels, ftrace, BPF poke sites
NOP2 = bytes.fromhex("6690")         # x86_nops[2]: 2-byte jump labels
INT3 = 0xCC
ENDBR64 = 4                          # with CONFIG_X86_KERNEL_IBT the patch site follows it

# ftrace's own code: the call targets of a traced function's site, and the sites that
# ftrace_update_ftrace_func and the graph tracer repatch (labels inside ftrace_caller)
FTRACE_TARGETS = frozenset({"__fentry__", "ftrace_caller", "ftrace_regs_caller",
                            "ftrace_trampoline", "ftrace_stub", "ftrace_graph_caller"})
FTRACE_CODE = frozenset({"ftrace_caller", "ftrace_call", "ftrace_regs_caller",
                         "ftrace_regs_call", "ftrace_graph_call", "ftrace_caller_op_ptr",
                         "ftrace_regs_caller_op_ptr", "ftrace_trampoline"})
KPROBE_PAGES = ("kprobe_insn_page", "kprobe_optinsn_page")
# kernel text mapping (Documentation/x86/x86_64/mm.rst); modules and BPF JIT images sit
# above it, in the module area
KERNEL_TEXT = (0xFFFFFFFF80000000, 0xFFFFFFFFA0000000)


@dataclass(frozen=True)
class Insn:
    """One decoded instruction of a poke's old or new bytes."""

    addr: int
    size: int
    mnemonic: str
    op_str: str
    target: int | None = None          # a call's or jump's absolute target
    target_symbol: str | None = None   # what was there at the poke's time

    @property
    def text(self) -> str:
        """objdump-style text: mnemonic, operands and the target's symbol in <>."""
        text = f"{self.mnemonic} {self.op_str}".rstrip()
        if self.target_symbol:
            text += f" <{self.target_symbol}>"
        return text

    @property
    def is_nop(self) -> bool:
        """A NOP of any length: a disarmed ftrace site or static branch looks like this."""
        return self.mnemonic == "nop"

    @property
    def is_call(self) -> bool:
        """A call whose absolute target is known (a rel32 call, not an indirect one)."""
        return self.mnemonic == "call" and self.target is not None

    @property
    def is_jmp(self) -> bool:
        """A jmp whose absolute target is known (rel8 or rel32, not an indirect one)."""
        return self.mnemonic == "jmp" and self.target is not None


@dataclass(frozen=True)
class PokeInfo:
    """A TEXT_POKE with what it was: `kind` (one of KINDS), `why` (the evidence, in words),
    the symbol at the site as of the poke's time, and both byte strings decoded with call
    and jump targets named as of that time."""

    poke: Poke
    kind: str
    why: str
    symbol: str | None
    old_insns: tuple[Insn, ...]
    new_insns: tuple[Insn, ...]

    @property
    def time(self) -> int:
        """The poke's record time (ns, the recording's clock)."""
        return self.poke.time

    @property
    def addr(self) -> int:
        """The poked kernel virtual address."""
        return self.poke.addr

    @property
    def old(self) -> bytes:
        """The bytes before the poke, as the TEXT_POKE record carries them."""
        return self.poke.old

    @property
    def new(self) -> bytes:
        """The bytes after the poke, as the TEXT_POKE record carries them."""
        return self.poke.new




def _branch_target(code: bytes, addr: int) -> int | None:
    """The absolute target of a relative call or jmp (e8/e9 rel32, eb rel8)."""
    if len(code) >= 5 and code[0] in (0xE8, 0xE9):
        return (addr + 5 + int.from_bytes(code[1:5], "little", signed=True)) & (2**64 - 1)
    if len(code) >= 2 and code[0] == 0xEB:
        return (addr + 2 + int.from_bytes(code[1:2], "little", signed=True)) & (2**64 - 1)
    return None


def decode(history: CodeHistory, code: bytes, addr: int, t: int) -> tuple[Insn, ...]:
    """`code` at `addr` as x86-64 instructions, targets named as of time t (ns).  Bytes
    capstone cannot decode (a kprobe's one saved byte of a longer instruction) come out as
    `.byte` lines."""
    out: list[Insn] = []
    pos = 0
    for ins in x86_64().disasm(code, addr):
        raw = bytes(ins.bytes)
        target = _branch_target(raw, ins.address) if ins.mnemonic in ("call", "jmp") else None
        sym = _name(history, target, t) if target is not None else None
        out.append(Insn(ins.address, ins.size, ins.mnemonic, ins.op_str, target, sym))
        pos += ins.size
    out += [Insn(addr + i, 1, ".byte", f"{code[i]:#04x}") for i in range(pos, len(code))]
    return tuple(out)


def _name(history: CodeHistory, addr: int, t: int) -> str | None:
    sym = history.symbol(addr, t)
    return str(sym) if sym is not None else None


def _symbol(history: CodeHistory, addr: int | None, t: int) -> Symbol | None:
    return history.symbol(addr, t) if addr is not None else None


def _is(sym: Symbol | None, *prefixes: str) -> bool:
    return sym is not None and sym.name.startswith(prefixes)


def _image(sym: Symbol | None, prefix: str) -> bool:
    """A BPF trampoline or dispatcher image: a KSYMBOL region (or kallsyms' [bpf]) of that
    name, not a kernel function such as bpf_trampoline_link_prog."""
    return _is(sym, prefix) and (sym.region is not None or sym.module == "bpf")


def classify(history: CodeHistory, poke: Poke) -> PokeInfo:
    """What `poke` was, from its bytes and the code at its site and targets at its time."""
    t = poke.time
    old = decode(history, poke.old, poke.addr, t)
    new = decode(history, poke.new, poke.addr, t)
    site = history.symbol(poke.addr, t)
    kind, why = _kind(history, poke, site, old, new)
    return PokeInfo(poke, kind, why, str(site) if site is not None else None, old, new)


def classify_all(history: CodeHistory) -> list[PokeInfo]:
    """Every poke of the history, in time order."""
    return [classify(history, p) for p in history.pokes]


def _first(insns: tuple[Insn, ...]) -> Insn | None:
    return insns[0] if insns else None


def _kind(history: CodeHistory, poke: Poke, site: Symbol | None,
          old: tuple[Insn, ...], new: tuple[Insn, ...]) -> tuple[str, str]:
    t = poke.time
    a, b = _first(old), _first(new)
    targets = [(i, _symbol(history, i.target, t)) for i in (a, b)
               if i is not None and i.target is not None]
    entry = site is not None and site.offset in (0, ENDBR64)
    # one NOP covering the site on one side: 5.15+ always writes x86_nops (NOP5, NOP2);
    # before that the kernel picked its "ideal" NOPs at boot by CPU (5.10 under qemu's
    # `max` CPU writes 66 66 66 66 90), so a single decoded nop of the full length counts
    whole_nop = any(len(ins) == 1 and ins[0].is_nop and ins[0].size == len(raw)
                    for ins, raw in ((old, poke.old), (new, poke.new)))
    nop_swap = (bool({poke.old, poke.new} & {NOP5, NOP2}) or whole_nop) \
        and len(poke.old) == len(poke.new)
    in_bpf_prog = site is not None and site.kind == "bpf" and site.name.startswith("bpf_prog_")

    # kprobes: INT3 over the first byte, its instruction slots, or an optimized probe's jmp
    if (poke.old[:1] == bytes([INT3]) or poke.new[:1] == bytes([INT3])) and \
            not _is(site, "__SCT__"):
        return "kprobe", "int3 (0xcc) written over or restored from the first byte"
    if _is(site, *KPROBE_PAGES):
        return "kprobe", f"in a kprobe instruction slot ({site.name})"
    for insn, sym in targets:
        if insn.is_jmp and _is(sym, *KPROBE_PAGES):
            return "kprobe", f"jmp into an optimized kprobe's slot ({sym.name})"

    # BPF trampolines and dispatchers: the images themselves, or code that reaches them
    if _image(site, "bpf_trampoline_"):
        return "bpf_trampoline", f"inside the trampoline image {site.name}"
    if _image(site, "bpf_dispatcher_"):
        return "bpf_dispatcher", f"inside the dispatcher image {site.name}"
    for insn, sym in targets:
        if _image(sym, "bpf_trampoline_"):
            return "bpf_trampoline", f"{insn.mnemonic} to the trampoline {sym.name}"
        if _image(sym, "bpf_dispatcher_"):
            return "bpf_dispatcher", f"{insn.mnemonic} to the dispatcher {sym.name}"
    # bpf_dispatcher_change_prog jumps from the dispatcher's function in kernel text
    # (bpf_dispatcher_<name>_func) to its image
    if _is(site, "bpf_dispatcher_") and site.name.endswith("_func") and site.region is None \
            and any(i.is_jmp for i, _ in targets):
        return "bpf_dispatcher", f"the dispatcher function {site.name} jumps to its image"

    # a JIT'd program: its entry NOP (fentry/freplace) or a direct tail call site
    if in_bpf_prog:
        jumps = [(i, s) for i, s in targets if i.is_jmp]
        if entry and nop_swap and (jumps or any(i.is_call for i, _ in targets)):
            return "bpf_trampoline", "a BPF program's entry NOP patched (freplace/fentry)"
        if jumps and all(i.is_nop or i.is_jmp for i in (a, b) if i is not None):
            into = [s for _, s in jumps if s is not None and s.kind == "bpf"
                    and s.name.startswith("bpf_prog_")]
            if into:
                dest = into[0]
                what = ("the bypass jmp" if dest.region is site.region
                        else f"jmp to {dest}")
                return "tail_call", f"direct tail call site in {site.name}: {what}"

    # ftrace: a function's first instruction, or ftrace's own code and trampolines
    if _is(site, "ftrace_trampoline") and not poke.old:
        return "ftrace", "a new ftrace trampoline's code"
    if site is not None and site.name in FTRACE_CODE:
        return "ftrace", f"ftrace's own call site ({site})"
    ftrace_target = [s for i, s in targets if i.is_call and s is not None
                     and s.name in FTRACE_TARGETS]
    if entry and ftrace_target and all(i.is_nop or i.is_call for i in (a, b) if i):
        return "ftrace", f"call {ftrace_target[0].name} at the entry of {site.name}"

    # static calls: trampolines, and call sites whose callee changes
    if _is(site, "__SCT__"):
        return "static_call", f"the static_call trampoline {site.name}"
    sct = [s for i, s in targets if (i.is_call or i.is_jmp) and _is(s, "__SCT__")]
    if sct:
        return "static_call", f"a call site of {sct[0].name}"
    if site is not None and site.kind in ("kernel", "module") and not entry and a and b \
            and len(poke.old) == len(poke.new) == 5:
        if (a.is_call and b.is_call) or (a.is_jmp and b.is_jmp):
            return "static_call", "an inline static_call site: the callee changed"
        if (a.is_nop and b.is_call) or (a.is_call and b.is_nop):
            return "static_call", "an inline static_call site: a NULL call patched"

    # jump labels: NOP <-> jmp of the same length in kernel or module text
    in_text = site is not None and site.kind in ("kernel", "module") or \
        site is None and KERNEL_TEXT[0] <= poke.addr < KERNEL_TEXT[1]
    if in_text and nop_swap and any(i.is_jmp for i, _ in targets):
        size = len(poke.old)
        return "jump_label", f"{size}-byte NOP <-> jmp (static key)"
    return "unknown", "no known mechanism patches these bytes there"
