"""`textrace export --store` and `textrace sql --store`: a real daemon's store, real BPF
loads, the tables read back with DuckDB and pyarrow directly and held against the store's
own loads and the kernel's own JIT images."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import duckdb
import pyarrow.parquet as pq
import pytest

import textrace.store
from textrace.bpf.prog_info import read_prog_info
from textrace.tables import TABLES

from bpfprogs import load_trivial, load_with_subprograms
from daemon_proc import DaemonProc

TEXTRACE = [sys.executable, "-m", "textrace"]


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run([*TEXTRACE, *args], capture_output=True, text=True, timeout=300,
                       stdin=subprocess.DEVNULL)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def query(directory, sql: str) -> list[tuple]:
    """DuckDB over the exported files themselves, not through textrace."""
    con = duckdb.connect()
    for t in TABLES:
        con.execute(f"CREATE VIEW {t} AS SELECT * FROM "
                    f"read_parquet('{os.path.join(directory, t + '.parquet')}')")
    return con.execute(sql).fetchall()


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A daemon's store of three real programs: one with subprograms and one trivial one
    still loaded when it stopped, one unloaded while it ran.  With each program's
    bpf_prog_info as the kernel gave it while loaded."""
    path = str(tmp_path_factory.mktemp("store-export") / "store")
    with DaemonProc(path) as d:
        fds = [load_with_subprograms(2, name="tr_xs_sub"), load_trivial("tr_xs_keep", 7),
               load_trivial("tr_xs_gone", 9)]
        infos = {i.id: i for i in (read_prog_info(fd) for fd in fds)}
        d.settle()
        os.close(fds.pop())          # unloaded while the daemon runs
        d.settle()
        code, log = d.stop()
    assert code == 0, log
    for fd in fds:
        os.close(fd)
    return path, infos


@pytest.fixture(scope="module")
def exported(store, corpus, tmp_path_factory):
    """One export of a perf recording and the store together."""
    path, _infos = store
    out = tmp_path_factory.mktemp("store-export") / "tables"
    rec = str(corpus.path("cpu-clock"))
    r = cli("export", "-i", rec, "--store", path, "--parquet", str(out))
    assert "wrote" in r.stderr
    st = textrace.store.open(path)
    [boot] = st.boots()
    return out, rec, boot.boot_id


def test_every_table_keeps_its_declared_columns(exported):
    out, _rec, _boot = exported
    for table, columns in TABLES.items():
        f = pq.ParquetFile(os.path.join(out, f"{table}.parquet"))
        assert [c.name for c in f.schema_arrow] == [c for c, _t, _d in columns], table


def test_a_boot_of_the_store_is_a_recording(exported, store):
    out, rec, boot_id = exported
    path, _infos = store
    rows = pq.read_table(os.path.join(out, "recordings.parquet")).to_pylist()
    assert len(rows) == 2
    [mine] = [r for r in rows if r["recording"] == boot_id]
    assert boot_id == open("/proc/sys/kernel/random/boot_id").read().strip()
    assert mine["boot"] == boot_id and mine["file"] == path
    assert mine["kernel_release"] == os.uname().release
    assert (mine["clock"], mine["writer"], mine["samples"]) == \
        ("perf_clock", "textrace daemon", 0)
    # how its loads were captured: in the kernel at load, from user space for programs
    # already loaded when the daemon started (other tests' held programs, in a full run)
    methods = {ld.method for ld in textrace.store.open(path).loads() if ld.method}
    assert "kernel" in methods
    assert mine["host"] is None and mine["capture"] == ",".join(sorted(methods))
    # the kernel's _text, as /proc/kallsyms says it (KASLR: this boot's)
    text = next(int(line.split()[0], 16) for line in open("/proc/kallsyms")
                if line.split()[2] == "_text")
    assert mine["kernel_text"] == text
    [other] = [r for r in rows if r["recording"] != boot_id]
    assert other["file"] == rec and other["boot"] is None and other["samples"] > 0


def test_programs_are_the_stores_loads(exported, store):
    out, _rec, boot_id = exported
    path, infos = store
    st = textrace.store.open(path)
    loads = st.loads()
    summary = json.loads(cli("store", path, "--json").stdout)
    got = query(out, f"SELECT id, tag, name, type, loaded_ns, unloaded_ns, captured, capture, "
                     f"funcs, jited_len FROM programs WHERE recording = '{boot_id}' "
                     f"ORDER BY id")
    assert len(got) == summary["programs"] == len(loads) >= 3
    want = sorted((ld.prog_id, ld.tag.hex(), ld.name or None, ld.type, ld.load_ns,
                   ld.unload_ns, st.prog_info(ld) is not None, ld.method, len(ld.addrs),
                   sum(ld.lens)) for ld in loads)
    assert got == want
    mine = {r[0]: r for r in got if r[0] in infos}
    assert set(mine) == set(infos)
    for prog_id, info in infos.items():
        row = mine[prog_id]
        assert (row[1], row[2], row[6], row[7]) == (info.tag.hex(), info.name, True, "kernel")
        assert row[8] == len(info.funcs()) and row[9] == len(info.jited_insns)
        assert row[4] is not None
    gone = next(i for i in infos.values() if i.name == "tr_xs_gone").id
    assert mine[gone][5] is not None and mine[gone][5] > mine[gone][4]
    keep = next(i for i in infos.values() if i.name == "tr_xs_keep").id
    assert mine[keep][5] is None
    # the perf recording's programs are there too, under its own id: its `progs`
    progs = cli("progs", "-i", _rec, "--json").stdout.splitlines()
    assert query(out, f"SELECT count(*) FROM programs WHERE recording != '{boot_id}'") == \
        [(len(progs),)]


def test_functions_carry_the_kernels_jit_bytes(exported, store):
    out, _rec, boot_id = exported
    _path, infos = store
    for prog_id, info in infos.items():
        got = query(out, f"SELECT func, addr, len, jited FROM functions WHERE recording = "
                         f"'{boot_id}' AND program = {prog_id} ORDER BY func")
        assert got == [(k, a, n, c) for k, (a, n, c) in enumerate(info.funcs())]
        assert len(got) == (3 if info.name == "tr_xs_sub" else 1)


def test_captured_images_are_code_versions_over_each_programs_life(exported, store):
    out, _rec, boot_id = exported
    path, infos = store
    st = textrace.store.open(path)
    for prog_id, info in infos.items():
        [ld] = st.loads(prog_id=prog_id)
        got = query(out, f"SELECT start, bytes, valid_from, valid_to, how, symbol FROM "
                         f"code_versions WHERE recording = '{boot_id}' AND program = "
                         f"{prog_id} ORDER BY start")
        assert got == sorted((a, c, ld.load_ns, ld.unload_ns, "capture", name)
                             for (a, _n, c), name in zip(info.funcs(), ld.ksyms))


def test_pokes_and_samples_are_the_stores(exported, store):
    out, _rec, boot_id = exported
    path, _infos = store
    summary = json.loads(cli("store", path, "--json").stdout)
    assert query(out, f"SELECT count(*) FROM pokes WHERE recording = '{boot_id}'") == \
        [(summary["pokes"],)]
    assert query(out, f"SELECT count(*) FROM samples WHERE recording = '{boot_id}'") == [(0,)]
    assert query(out, f"SELECT count(*) FROM samples WHERE recording != '{boot_id}'")[0][0] > 0


def test_sql_over_a_store_and_a_recording(exported, store):
    out, rec, boot_id = exported
    path, _infos = store
    summary = json.loads(cli("store", path, "--json").stdout)
    r = cli("sql", "--store", path, "--json", "SELECT count(*) AS n FROM programs")
    assert [json.loads(line) for line in r.stdout.splitlines()] == [{"n": summary["programs"]}]
    # both at once, kept apart by recording: the same counts as the export's
    r = cli("sql", "-i", rec, "--store", path, "--json",
            "SELECT recording, count(*) AS n FROM programs GROUP BY recording")
    got = {d["recording"]: d["n"] for d in map(json.loads, r.stdout.splitlines())}
    want = dict(query(out, "SELECT recording, count(*) FROM programs GROUP BY recording"))
    assert got == want and got[boot_id] == summary["programs"]
    # the default text output names the boot
    r = cli("sql", "--store", path, "SELECT recording, writer FROM recordings")
    assert boot_id in r.stdout and "textrace daemon" in r.stdout


def test_a_directory_without_a_store_is_one_line(tmp_path):
    r = cli("export", "--store", str(tmp_path), "--parquet", str(tmp_path / "out"),
            check=False)
    assert r.returncode == 2 and "no textrace store here" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = cli("export", "--parquet", str(tmp_path / "out"), check=False)
    assert r.returncode == 2 and "Traceback" not in r.stderr
