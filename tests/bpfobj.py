"""Load clang-built BPF objects with the system libbpf (the way real loaders do)."""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys

from textrace.bpf.capture.loader import _libbpf

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bpf")


def build(name: str, out_dir: str) -> str:
    src = os.path.join(HERE, f"{name}.bpf.c")
    out = os.path.join(out_dir, f"{name}.bpf.o")
    subprocess.run(["clang", "-O2", "-g", "-target", "bpf", "-D__TARGET_ARCH_x86",
                    "-I/usr/include/x86_64-linux-gnu", "-c", src, "-o", out], check=True)
    return out


class LoadedObject:
    """An object opened and loaded; `prog_fd(name)`; close() unloads everything."""

    def __init__(self, path: str):
        self.lib = _libbpf()
        self.lib.bpf_program__fd.restype = ctypes.c_int
        self.lib.bpf_program__fd.argtypes = (ctypes.c_void_p,)
        self.obj = self.lib.bpf_object__open_file(path.encode(), None)
        assert self.obj, f"cannot open {path}"
        err = self.lib.bpf_object__load(self.obj)
        assert err == 0, f"load {path}: {os.strerror(-err)}"

    def prog_fd(self, name: str) -> int:
        prog = self.lib.bpf_object__find_program_by_name(self.obj, name.encode())
        return self.lib.bpf_program__fd(prog)

    def close(self) -> None:
        self.lib.bpf_object__close(self.obj)


def record_workload(out, code: str, *options: str, timeout: int = 300) -> dict:
    """Run Python `code` under `textrace record -a OPTIONS -o out`; the workload prints
    what it learnt about its programs as JSON on its last line, which is returned."""
    r = subprocess.run([sys.executable, "-m", "textrace", "record", "-a", *options,
                        "-o", str(out), "--", sys.executable, "-c", code],
                       capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])
