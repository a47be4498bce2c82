"""textrace packs on Debian's 6.1 in the testbed (one boot): there /proc/kcore is the
kernel code reader (it reads unmapped module-area pages as zeros), and the pack is one
2 MiB bpf_prog_pack_alloc area as /proc/vmallocinfo lists it."""

from __future__ import annotations

import json
import os

import pytest

TESTS = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(os.path.dirname(TESTS), "src")
STORM = 2000

SCRIPT = """
set -e
export PYTHONPATH={src}
python3 -m textrace record -a -o packs.data -- \\
    python3 {tests}/packs_workload.py kernel.json --storm {storm} --big 2> record.err
python3 -m textrace packs -i packs.data --json > packs.json 2>> record.err
uname -r > release
"""


@pytest.fixture(scope="module")
def run(guest, tmp_path_factory):
    shared = tmp_path_factory.mktemp("guest-packs")
    r = guest.run(["sh", "-c", SCRIPT.format(src=SRC, tests=TESTS, storm=STORM)],
                  shared=shared, timeout=600)
    err = (shared / "record.err").read_text() if (shared / "record.err").exists() else ""
    assert r.returncode == 0, f"{r.stderr}\n{err}"
    rows = [json.loads(ln) for ln in (shared / "packs.json").read_text().splitlines()]
    return {"dir": shared, "packs": rows[:-1], "summary": rows[-1],
            "kernel": json.loads((shared / "kernel.json").read_text())}


def test_the_guest_runs_61(run):
    assert (run["dir"] / "release").read_text().startswith("6.1.")


def test_packs_are_the_areas_the_kernel_allocated(run):
    s = run["summary"]
    assert s["pack_size"] == 2 << 20 and s["reader"] == "kcore"
    areas = {(a["start"], a["size"] - 4096) for a in run["kernel"]["vmalloc"]
             if a["caller"].startswith("bpf_prog_pack_alloc")}
    packs = {(p["start"], p["size"]) for p in run["packs"]}
    assert packs and packs <= areas   # each a bpf_prog_pack_alloc area less its guard page
    for addr, n in [f for prog in run["kernel"]["held"] for f in prog]:
        assert any(p[0] <= addr and addr + n <= p[0] + p[1] for p in packs), hex(addr)


def test_held_programs_are_placed_where_the_kernel_says(run):
    t = run["kernel"]["storm"][0]   # while they were held
    placed = {p["start"] + pl["offset"]: pl for p in run["packs"] for pl in p["placements"]
              if (pl["time"] or 0) <= t and (pl["freed"] is None or pl["freed"] > t)}
    for addr, n in [f for prog in run["kernel"]["held"] for f in prog]:
        pl = placed[addr & ~63]
        assert pl["size_source"] == "header" and pl["size"] >= n + 8


def test_a_7_kib_program_takes_its_chunks_in_the_pack(run):
    (addr, n), = run["kernel"]["held"][-1]
    assert n > 4096 and not run["summary"]["too_big"]
    pl = next(pl for p in run["packs"] for pl in p["placements"]
              if p["start"] + pl["offset"] == addr & ~63 and pl["name"].endswith("held_big"))
    assert pl["size"] == -(-(n + 3 & ~3) + 24) // 64 * 64 or pl["size"] >= n + 24


def test_every_freed_range_of_the_storm_is_checked_and_none_is_stale(run):
    s = run["summary"]
    storm = [pl for p in run["packs"] for pl in p["placements"]
             if pl["name"].endswith("_tr_pkstorm")]
    assert len(storm) == STORM and all(pl["freed"] is not None for pl in storm)
    assert s["freed"] >= STORM and s["freed_checked"] == s["freed"] and s["stale"] == 0
