"""Worker of test_bad_textrace_files: damages a textrace-made recording in many ways and
runs every verb on each mutant, in this process under a memory limit and an alarm.

    python3 mutate_verbs.py SPEC.json      (prints one JSON line of results)

SPEC: {"files": [{"path", "prog", "addr"}], "mutants": N, "seed": S, "tmp": DIR,
"mem_gib": G, "seconds": T}.  A mutation hits one region — the header and attrs, the
records, one header feature, one entry of textrace's section, one stream chunk — by a bit
flip, a u16/u64 overwrite or a cut.  Anything raised but a TextraceError is a failure (with
its traceback), and so is a verb that runs past T seconds or past G GiB.
"""

from __future__ import annotations

import json
import os
import random
import resource
import signal
import struct
import sys
import time
import traceback


class Hang(Exception):
    pass


def regions(data: bytes) -> list[tuple[str, int, int]]:
    from textrace.perf.abi import RecordType
    from textrace.perf.private import FEATURE_BIT, PrivateSection
    from textrace.perf.reader import PerfData
    p = PerfData(data, path="orig", salvage=True)
    h = p.header
    out = [("header", 0, h.data.offset), ("records", h.data.offset, h.data.end)]
    for fid in p.features:
        off = p.feature_offset(fid)
        out.append((f"feature{fid}", off, off + len(p.feature_bytes(fid))))
        if fid == FEATURE_BIT:
            sec = PrivateSection.parse(p.feature_bytes(fid), offset=off)
            for (kind, blob), o in zip(sec.entries, sec.offsets):
                out.append((f"entry{kind}", o - 16, o + min(len(blob), 4096)))
    for off, rec in p.raw_records(frozenset({RecordType.FINISHED_INIT})):
        out.append(("chunk", off, off + min(len(rec), 256)))
    return out


def mutate(data: bytes, rng: random.Random, regs) -> tuple[bytes, str]:
    b = bytearray(data)
    name, lo, hi = rng.choice(regs)
    what = []
    for _ in range(rng.randint(1, 3)):
        at = rng.randrange(lo, max(hi, lo + 1)) if hi > lo else lo
        if at >= len(b):
            break
        kind = rng.choice(["flip", "flip", "u16", "u64", "cut"])
        if kind == "flip":
            b[at] ^= 1 << rng.randrange(8)
        elif kind == "u16" and at + 2 <= len(b):
            struct.pack_into("<H", b, at, rng.choice([0, 1, 8, 0xFFFF]))
        elif kind == "u64" and at + 8 <= len(b):
            struct.pack_into("<Q", b, at, rng.choice([0, 1, 0xFFFF, 1 << 31, 1 << 63,
                                                      (1 << 64) - 1]))
        elif kind == "cut":
            del b[at:]
        what.append(f"{kind}@{at:#x}")
    return bytes(b), f"{name}: {' '.join(what)}"


def verbs(path: str, prog: int, addr: int, salvage: bool, tmp: str, kernel):
    from textrace.recorder.finish import recover
    from textrace.perf.reader import PerfData
    from textrace.views.annotate import annotate
    from textrace.views.callsites import callsites
    from textrace.views.events import event_rows
    from textrace.views.pokes import poke_rows
    from textrace.views.progs import prog_rows
    from textrace.load import kernel_symbols_for
    from textrace.views.report import report_rows
    from textrace.views.show import show

    def fresh():
        return PerfData.open(path, salvage=salvage)

    def report(d):
        k = kernel_symbols_for(d, live=lambda: kernel)
        return report_rows(d, kernel=k or kernel)

    def rec(_d):
        out = os.path.join(tmp, "recovered.data")
        recover(path, out)
        return prog_rows(PerfData.open(out))
    return [("events", lambda d: list(event_rows(d))), ("report", report),
            ("progs", prog_rows), ("pokes", poke_rows), ("show", lambda d: show(d, addr)),
            ("annotate", lambda d: annotate(d, str(prog))),
            ("callsites", lambda d: callsites(d, str(prog))), ("recover", rec)], fresh


def main() -> int:
    spec = json.load(open(sys.argv[1]))
    limit = int(spec.get("mem_gib", 3) * (1 << 30))
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    seconds = int(spec.get("seconds", 30))

    def alarm(*_):
        raise Hang(f"more than {seconds} s")
    signal.signal(signal.SIGALRM, alarm)
    from textrace.errors import TextraceError
    from textrace.sources.kallsyms import read_proc_kallsyms
    kernel = read_proc_kallsyms()
    rng = random.Random(spec.get("seed", 0))
    failures, runs, clean_errors = [], 0, 0
    spent: dict[str, float] = {}
    for f in spec["files"]:
        orig = open(f["path"], "rb").read()
        regs = regions(orig)
        for i in range(spec["mutants"]):
            data, how = mutate(orig, rng, regs)
            path = os.path.join(spec["tmp"], "mutant.data")
            with open(path, "wb") as out:
                out.write(data)
            salvage = bool(i % 2)
            table, fresh = verbs(path, f["prog"], f["addr"], salvage, spec["tmp"], kernel)
            for name, fn in table:
                runs += 1
                t0 = time.monotonic()
                signal.alarm(seconds)
                try:
                    fn(fresh())
                except TextraceError as e:
                    clean_errors += 1
                    if not (e.file or e.offset is not None or e.field):
                        failures.append(f"{how} {name}: error names no place: {e}")
                except BaseException:  # noqa: BLE001 - everything else is the bug
                    failures.append(f"{how} {name} salvage={salvage}: "
                                    f"{traceback.format_exc(limit=-4)}")
                finally:
                    signal.alarm(0)
                    spent[name] = spent.get(name, 0) + time.monotonic() - t0
    print(json.dumps({"runs": runs, "errors": clean_errors, "failures": failures,
                      "seconds": {k: round(v, 2) for k, v in spent.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
