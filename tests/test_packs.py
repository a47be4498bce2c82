"""textrace packs on this kernel (6.18): a real recording of a 2000-program storm with
programs held through it, checked against what the kernel reports (the held programs'
jited_ksyms, /proc/kallsyms, /proc/vmallocinfo's bpf_prog_pack_alloc areas)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest

from bpfprogs import load_trivial
from textrace.bpf.prog_info import JIT_ARRAYS, read_prog_info

TESTS = os.path.dirname(os.path.abspath(__file__))
STORM = 2000


def textrace(*args, timeout=300) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "textrace", *args], capture_output=True,
                       text=True, timeout=timeout)
    assert r.returncode == 0, r.stderr
    return r


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """The test itself holds one program through the whole recording; the workload holds
    four more during it and runs the storm."""
    d = tmp_path_factory.mktemp("packs")
    fd = load_trivial("tr_outlives", 7)
    try:
        outlives = [[a, n] for a, n, _c in read_prog_info(fd, JIT_ARRAYS).funcs()]
        textrace("record", "-a", "-o", str(d / "packs.data"), "--", sys.executable,
                 os.path.join(TESTS, "packs_workload.py"), str(d / "kernel.json"),
                 "--storm", str(STORM))
        with open("/proc/kallsyms") as f:
            kallsyms = {int(ln.split()[0], 16) for ln in f if "tr_outlives" in ln}
    finally:
        os.close(fd)
    rows = [json.loads(ln) for ln in
            textrace("packs", "-i", str(d / "packs.data"), "--json").stdout.splitlines()]
    kernel = json.loads((d / "kernel.json").read_text())
    return {"dir": d, "packs": rows[:-1], "summary": rows[-1], "kernel": kernel,
            "outlives": outlives, "kallsyms": kallsyms}


def _placements(rec):
    return [(p, pl) for p in rec["packs"] for pl in p["placements"]]


def test_packs_are_the_areas_vmallocinfo_lists(recorded):
    areas = {(a["start"], a["size"] - 4096) for a in recorded["kernel"]["vmalloc"]}
    seen = {(p["start"], p["size"]) for p in recorded["packs"]}
    assert seen and seen <= areas  # each pack is a bpf_prog_pack_alloc area less its guard
    assert all(p["source"] == "probe" for p in recorded["packs"])
    assert recorded["summary"]["pack_size"] == 2 << 20


def test_held_programs_are_placed_where_the_kernel_says(recorded):
    """Every function of the held programs (jited_ksyms, read while they lived) is a
    placement in the pack holding it, its header 64-byte aligned at most 63 bytes before."""
    t = recorded["kernel"]["storm"][0]   # while they were held
    placed = {p["start"] + pl["offset"]: (p, pl) for p, pl in _placements(recorded)
              if (pl["time"] or 0) <= t and (pl["freed"] is None or pl["freed"] > t)}
    funcs = [f for prog in recorded["kernel"]["held"] for f in prog]
    assert len(funcs) >= 6
    for addr, n in funcs:
        hdr = addr & ~63
        assert hdr in placed, hex(addr)
        pack, pl = placed[hdr]
        assert pack["start"] <= addr and addr + n <= pack["start"] + pack["size"]
        assert pl["size"] >= n + 8 and pl["size"] % 64 == 0
        assert pl["size_source"] == "header"  # read from the kernel while it lived


def test_a_program_held_through_the_recording_is_not_reported_freed(recorded):
    (addr, n), = recorded["outlives"]
    assert addr in recorded["kallsyms"]
    placed = [pl for p, pl in _placements(recorded) if p["start"] + pl["offset"] == addr & ~63]
    assert placed and all(pl["freed"] is None for pl in placed)
    freed_at = {r["start"] for p in recorded["packs"] for r in p["stale_ranges"]}
    assert addr & ~63 not in freed_at
    # the recorder checked no range of it: its checks are of programs that were unloaded
    from textrace.entries import decode_packs as unpack_packs_entries
    from textrace.perf.private import Kind, private_section
    from textrace.perf.reader import PerfData
    data = PerfData.open(str(recorded["dir"] / "packs.data"))
    entries = unpack_packs_entries(private_section(data).get(Kind.PACKS)[0])
    assert not [e for e in entries if e["t"] == "freed" and e["addr"] == addr]


def test_every_freed_range_of_the_storm_is_checked_and_none_is_stale(recorded):
    s = recorded["summary"]
    storm = [pl for _p, pl in _placements(recorded) if pl["name"].endswith("_tr_pkstorm")]
    assert len(storm) == STORM
    assert all(pl["freed"] is not None for pl in storm)
    assert s["freed"] >= STORM + 5          # the storm and the workload's held programs
    assert s["freed_checked"] == s["freed"]
    assert s["stale"] == 0
    verdicts = {}
    for p in recorded["packs"]:
        for k, v in p["verdicts"].items():
            verdicts[k] = verdicts.get(k, 0) + v
    assert set(verdicts) <= {"invalidated", "reused"} and verdicts["invalidated"] > 0


def test_occupancy_and_fragmentation_are_reported(recorded):
    for p in recorded["packs"]:
        for key in ("start", "size", "programs", "peak_bytes", "freed_checked", "stale"):
            assert key in p
        assert 0 < p["peak_bytes"] <= p["size"]
        assert p["largest_free_run"] <= p["size"] - p["peak_bytes"]
        assert p["peak_bytes"] % 64 == 0
    assert sum(p["programs"] for p in recorded["packs"]) == recorded["summary"]["programs"]


def test_show_after_a_free_gives_int3_with_the_interval(recorded):
    pack, pl = next((p, pl) for p, pl in _placements(recorded)
                    if pl["name"].endswith("_tr_pkstorm"))
    addr = pack["start"] + pl["offset"] + 8   # the first byte an image may start at
    path = str(recorded["dir"] / "packs.data")
    before = [json.loads(ln) for ln in textrace("show", hex(addr), "--at", str(pl["time"] - 1),
                                                "-i", path, "--json").stdout.splitlines()]
    assert [v["kind"] for v in before] == ["pack_free"]
    assert set(bytes.fromhex(before[0]["bytes"])) == {0xCC}   # up to the next placement
    # the pack's fill, unless a program (another's, on a busy machine) was freed there
    earlier = [q for q, qpl in _placements(recorded) if qpl["time"] is not None
               and qpl["time"] < pl["time"] and qpl["freed"] is not None
               and qpl["freed"] <= pl["time"] and q["start"] + qpl["offset"] <= addr
               < q["start"] + qpl["offset"] + qpl["size"]]
    assert before[0]["inferred"]["change"] == ("invalidated" if earlier else "fill")
    after = [json.loads(ln) for ln in textrace("show", hex(addr), "--at", str(pl["freed"] + 1),
                                               "-i", path, "--json").stdout.splitlines()]
    assert len(after) == 1 and after[0]["kind"] == "pack_free"
    assert set(bytes.fromhex(after[0]["bytes"])) == {0xCC}
    inferred = after[0]["inferred"]
    assert inferred["change"] == "invalidated" and inferred["freed"] == pl["name"]
    assert inferred["after"] == pl["freed"] and inferred["by"] > pl["freed"]


def test_plot_is_a_png_only_its_owner_reads(recorded):
    png = recorded["dir"] / "packs.png"
    textrace("packs", "-i", str(recorded["dir"] / "packs.data"), "--plot", str(png))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert stat.S_IMODE(png.stat().st_mode) == 0o600


def test_text_output_names_each_pack(recorded):
    out = textrace("packs", "-i", str(recorded["dir"] / "packs.data")).stdout
    for p in recorded["packs"]:
        assert f"pack {p['start']:#x}" in out
    assert f"{recorded['summary']['freed_checked']}/{recorded['summary']['freed']} freed " \
           f"ranges checked, 0 stale" in out


def test_a_damaged_pack_entry_is_a_one_line_error(recorded, tmp_path):
    """The packs entry of the real recording, cut short inside a line: packs says which
    file and field, exit 2, no traceback."""
    from textrace.entries import decode_packs as unpack_packs_entries
    from textrace.perf.private import FEATURE_BIT, Kind, PrivateSection, private_section
    from textrace.perf.reader import PerfData
    from textrace.errors import FormatError
    blob = private_section(PerfData.open(str(recorded["dir"] / "packs.data"))).get(
        Kind.PACKS)[0]
    with pytest.raises(FormatError) as e:
        unpack_packs_entries(blob[:len(blob) // 2] + b"\n{", file="x.data")
    assert "x.data" in str(e.value) and "textrace.PACKS" in str(e.value)
    assert FEATURE_BIT == 255 and isinstance(PrivateSection.parse(
        PrivateSection([(Kind.PACKS, blob)]).pack()), PrivateSection)
