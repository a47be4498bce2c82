"""Inside a testbed guest, under `textrace record`: load programs whose capture has every
part (a clang-built object with a subprogram, line info and BTF; a program with 11
subprograms; a long one of several chunks), read the kernel's own account of each while it
is held (BPF_OBJ_GET_INFO_BY_FD, the BTF by id), and print it as JSON:

    python3 contents_workload.py DIR    {name: {id, funcs: [[addr, len, hex]], xlated,
                                         line_info: [[insn_off, file, line, col]],
                                         jited_line_info, btf}} on stdout
"""

from __future__ import annotations

import json
import os
import sys

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, TESTS)


def account(fd: int) -> dict:
    from textrace.bpf.btf import read_btf
    from textrace.bpf.prog_info import read_prog_info
    t = read_prog_info(fd)
    return {"id": t.id, "tag": t.tag.hex(),
            "funcs": [[a, n, c.hex()] for a, n, c in t.funcs()],
            "xlated": t.xlated_insns.hex(),
            "line_info": [[li.insn_off, li.file_name_off, li.line_off, li.line_col]
                          for li in t.line_info],
            "jited_line_info": list(t.jited_line_info),
            "btf": read_btf(t.btf_id).hex() if t.btf_id else None}


def main(out_dir: str) -> None:
    from bpfobj import LoadedObject, build
    from bpfprogs import EXIT, load_with_subprograms, mov_r0
    from textrace.bpf.syscall import prog_load
    obj = LoadedObject(build("calls", out_dir))
    fds = {"tr_calls": obj.prog_fd("tr_calls"),
           "tr_subs11": load_with_subprograms(11, name="tr_subs11"),
           # 4000 instructions: xlated 32000 bytes, JIT ~20000: several chunks in either
           # variant (2040 or 16376 bytes each)
           "tr_long": prog_load(b"".join(mov_r0(k) for k in range(4000)) + EXIT,
                                name="tr_long")}
    out = {name: account(fd) for name, fd in fds.items()}
    for name, fd in fds.items():
        if name != "tr_calls":
            os.close(fd)
    obj.close()
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1])
