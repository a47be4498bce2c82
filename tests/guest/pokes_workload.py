"""Inside the testbed guest (Debian's 6.1), under `textrace record`: make the kernel patch
its code in each way it does, and after each change copy the kernel's own memory
(/proc/kcore) of kernel text and of every BPF symbol, with the time of the copy.

    python3 pokes_workload.py DIR            the workload (snapshots kept in the guest's /tmp)
    python3 pokes_workload.py --extract DIR  afterwards: DIR/kcore.json, the snapshot bytes
                                             at every address DIR/pokes.data's TEXT_POKE
                                             records name, and of every out-of-line code
                                             symbol its KSYMBOL records register
    python3 pokes_workload.py --code-reads   the capture program's reads of kernel code
                                             against kcore's, as JSON on stdout
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
import time

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, TESTS)

from textrace.sources.kernel_memory import Kcore  # noqa: E402

TRACING = "/sys/kernel/tracing"
SNAPSHOTS = "/tmp/snapshots"
BPF_SYMBOL_MAX = 4096


def now() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


def kallsyms() -> list[tuple[int, str, str | None]]:
    out = []
    with open("/proc/kallsyms") as f:
        for line in f:
            parts = line.split()
            out.append((int(parts[0], 16), parts[2], parts[3] if len(parts) > 3 else None))
    return out


def write(path: str, text: str) -> None:
    with open(os.path.join(TRACING, path), "w") as f:
        f.write(text)


class Snapshots:
    def __init__(self):
        self.kcore = Kcore()
        syms = {name: addr for addr, name, _m in kallsyms() if name in ("_text", "_etext")}
        self.text = (syms["_text"], syms["_etext"])
        self.steps: list[dict] = []
        os.makedirs(SNAPSHOTS, exist_ok=True)

    def take(self, step: str) -> None:
        time.sleep(0.2)  # let deferred work (kprobe optimisation, RCU frees) settle
        t = now()
        i = len(self.steps)
        lo, hi = self.text
        with open(f"{SNAPSHOTS}/{i}.text", "wb") as f:
            f.write(self.kcore.read(lo, hi - lo))
        bpf = {}
        # BPF programs, trampolines and dispatchers ([bpf]), ftrace trampolines and
        # kprobe instruction pages ([__builtin__ftrace], [__builtin__kprobes])
        syms = sorted((a, n) for a, n, m in kallsyms()
                      if m == "[bpf]" or (m or "").startswith("[__builtin__"))
        for k, (addr, name) in enumerate(syms):
            end = syms[k + 1][0] if k + 1 < len(syms) else addr + BPF_SYMBOL_MAX
            n = min(end - addr, BPF_SYMBOL_MAX)
            try:
                bpf[addr] = self.kcore.read(addr, n).hex()
            except Exception:
                continue
        with open(f"{SNAPSHOTS}/{i}.bpf.json", "w") as f:
            json.dump({str(a): v for a, v in bpf.items()}, f)
        self.steps.append({"step": step, "time": t, "done": now()})
        with open(f"{SNAPSHOTS}/steps.json", "w") as f:
            json.dump(self.steps, f)


def instruction_offset(kcore: Kcore, addr: int, skip: int) -> int:
    """Offset of the instruction `skip` instructions into the function at addr."""
    import capstone
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    insns = list(md.disasm_lite(kcore.read(addr, 64), 0))
    return insns[skip][0]


def workload(out_dir: str) -> None:
    from bpfobj import LoadedObject, build
    from bpfprogs import load_trivial
    snap = Snapshots()
    snap.take("start")

    # jump labels: a tracepoint's static key
    write("events/sched/sched_switch/enable", "1")
    snap.take("tracepoint on")
    write("events/sched/sched_switch/enable", "0")
    snap.take("tracepoint off")

    # ftrace: the function tracer on one function
    write("set_ftrace_filter", "do_sys_openat2")
    write("current_tracer", "function")
    snap.take("ftrace on")
    write("current_tracer", "nop")
    write("set_ftrace_filter", "")
    snap.take("ftrace off")

    # kprobe: inside a function (not at its ftrace site): an int3, then optimised to a jmp
    addr = next(a for a, n, m in kallsyms() if n == "vfs_write" and m is None)
    off = instruction_offset(snap.kcore, addr, 3)
    write("kprobe_events", f"p:trk vfs_write+{off}\n")
    write("events/kprobes/trk/enable", "1")
    snap.take("kprobe on")
    write("events/kprobes/trk/enable", "0")
    write("kprobe_events", "")  # opened for writing with O_TRUNC: removes them all
    snap.take("kprobe off")

    # a BPF trampoline: fentry attach and detach
    obj = LoadedObject(build("fentry", out_dir))
    prog = obj.lib.bpf_object__find_program_by_name(obj.obj, b"tr_fentry")
    link = obj.lib.bpf_program__attach(prog)
    assert link, "fentry attach failed"
    snap.take("fentry attached")
    obj.lib.bpf_link__destroy(link)
    snap.take("fentry detached")
    obj.close()

    # a tail call: the JIT patches the caller when the prog-array slot changes
    tail = LoadedObject(build("tail", out_dir))
    target = load_trivial("tr_tail_target")
    jmp = tail.lib.bpf_map__fd(tail.lib.bpf_object__find_map_by_name(tail.obj, b"jmp"))
    key, value = ctypes.c_uint32(0), ctypes.c_uint32(target)
    assert tail.lib.bpf_map_update_elem(jmp, ctypes.byref(key), ctypes.byref(value), 0) == 0
    snap.take("tail call set")
    tail.lib.bpf_map_delete_elem.argtypes = (ctypes.c_int, ctypes.c_void_p)
    assert tail.lib.bpf_map_delete_elem(jmp, ctypes.byref(key)) == 0
    snap.take("tail call cleared")
    tail.close()
    os.close(target)
    snap.take("end")


def extract(out_dir: str) -> None:
    """The snapshot bytes at every poked range, for the host to compare with textrace."""
    from textrace.perf.reader import PerfData
    data = PerfData.open(os.path.join(out_dir, "pokes.data"))
    records = list(data.records())
    ranges = sorted({(r.addr, max(r.old_len, r.new_len)) for r in records
                     if r.type_name == "TEXT_POKE"})
    ranges += sorted({(r.addr, min(r.len, BPF_SYMBOL_MAX)) for r in records
                      if r.type_name == "KSYMBOL" and not r.name.startswith("bpf_prog_")})
    with open(f"{SNAPSHOTS}/steps.json") as f:
        steps = json.load(f)
    text_lo = Snapshots().text[0]
    for i, step in enumerate(steps):
        with open(f"{SNAPSHOTS}/{i}.text", "rb") as f:
            text = f.read()
        with open(f"{SNAPSHOTS}/{i}.bpf.json") as f:
            bpf = {int(a): bytes.fromhex(v) for a, v in json.load(f).items()}
        found = {}  # "addr:len" -> hex
        for addr, n in ranges:
            if 0 <= addr - text_lo and addr - text_lo + n <= len(text):
                found[f"{addr}:{n}"] = text[addr - text_lo:addr - text_lo + n].hex()
                continue
            for start, code in bpf.items():
                if start <= addr and addr + n <= start + len(code):
                    found[f"{addr}:{n}"] = code[addr - start:addr - start + n].hex()
        step["bytes"] = found
    with open(os.path.join(out_dir, "kcore.json"), "w") as f:
        json.dump(steps, f)


def code_reads() -> None:
    """Kernel text and a JIT image read by the capture program, compared with kcore."""
    from bpfprogs import load_with_subprograms
    from textrace.bpf.capture.loader import CaptureProgram
    from textrace.bpf.prog_info import read_prog_info
    kcore, capture = Kcore(), CaptureProgram()
    syms = {n: a for a, n, m in kallsyms() if m is None}
    ranges = {name: (syms[name], 256) for name in ("vfs_read", "schedule", "do_sys_openat2")}
    ranges["_text (1 MiB)"] = (syms["_text"], 1 << 20)
    fd = load_with_subprograms(2, name="tr_guest_read")
    for k, (addr, n, _code) in enumerate(read_prog_info(fd).funcs()):
        ranges[f"tr_guest_read func {k}"] = (addr, n)
    out = {}
    for name, (addr, n) in ranges.items():
        out[name] = {"addr": addr, "len": n, "equal": capture.read_code(addr, n)[1]
                     == kcore.read(addr, n)}
    os.close(fd)
    capture.close()
    print(json.dumps(out))


if __name__ == "__main__":
    if sys.argv[1] == "--extract":
        extract(sys.argv[2])
    elif sys.argv[1] == "--code-reads":
        code_reads()
    else:
        workload(sys.argv[1])
