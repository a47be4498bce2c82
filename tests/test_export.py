"""`textrace export` and `textrace sql`: the tables, read back with DuckDB and pyarrow
directly, against what `progs`, `report` and `pokes` say of the same real recordings."""

from __future__ import annotations

import collections
import json
import os
import pty
import select
import shutil
import stat
import subprocess
import sys

import duckdb
import pyarrow.parquet as pq
import pytest

from bpfobj import record_workload
from test_history import TESTS, WORKLOAD as REUSE_WORKLOAD
from test_pokes import BY_NAME, MS, PROG_A, T0, poked  # noqa: F401 (poked: a fixture)
from textrace.history.code_history import Image
from textrace.history.versions import code_versions
from textrace.load import load_history
from textrace.perf.bulk import sample_arrays
from textrace.perf.reader import PerfData
from textrace.tables import TABLES

TEXTRACE = [sys.executable, "-m", "textrace"]


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run([*TEXTRACE, *args], capture_output=True, text=True, timeout=300,
                       stdin=subprocess.DEVNULL)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


def query(directory, sql: str) -> list[tuple]:
    """DuckDB over the exported files themselves, not through textrace."""
    con = duckdb.connect()
    for t in TABLES:
        con.execute(f"CREATE VIEW {t} AS SELECT * FROM "
                    f"read_parquet('{os.path.join(directory, t + '.parquet')}')")
    return con.execute(sql).fetchall()


@pytest.fixture(scope="module")
def reuse(tmp_path_factory):
    """textrace record of program A spinning, unloaded, and B at A's address spinning."""
    out = tmp_path_factory.mktemp("export") / "reuse.data"
    facts = record_workload(out, REUSE_WORKLOAD.format(tests=TESTS), "-e", "cpu-clock",
                            "-F", "999")
    assert facts["a"][1] == facts["b"][1], "bpf_prog_pack did not reuse A's address"
    return out, facts


@pytest.fixture(scope="module")
def exported(corpus, reuse, tmp_path_factory):
    """One export of a perf recording of bpftool's probe and the textrace recording."""
    out = tmp_path_factory.mktemp("export") / "tables"
    files = [str(corpus.path("bpf-probe")), str(reuse[0])]
    r = cli("export", *[a for f in files for a in ("-i", f)], "--parquet", str(out))
    assert "wrote" in r.stderr
    ids = dict(query(out, "SELECT file, recording FROM recordings"))
    return out, files, ids


def test_every_table_is_a_zstd_parquet_file_of_the_declared_types(exported):
    out, _files, _ids = exported
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o700
    for table, columns in TABLES.items():
        path = os.path.join(out, f"{table}.parquet")
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        f = pq.ParquetFile(path)
        assert [c.name for c in f.schema_arrow] == [c for c, _t, _d in columns]
        meta = f.metadata
        for rg in range(meta.num_row_groups):
            for col in range(meta.num_columns):
                assert meta.row_group(rg).column(col).compression == "ZSTD"
        for (name, kind, _doc), col in zip(columns, f.schema):
            # plain Parquet types any engine reads: no Arrow-only extension types
            physical = {"string": "BYTE_ARRAY", "binary": "BYTE_ARRAY", "int32": "INT32",
                        "int64": "INT64", "uint64": "INT64", "bool": "BOOLEAN",
                        "timestamp": "INT64"}[kind]
            assert col.physical_type == physical, (table, name)
            if kind == "uint64":
                assert col.logical_type.type == "INT" and "isSigned=false" in str(
                    col.logical_type), (table, name)
            if kind == "string":
                assert col.logical_type.type == "STRING", (table, name)
            if kind == "timestamp":
                assert col.logical_type.type == "TIMESTAMP", (table, name)


def test_programs_are_the_progs_of_each_recording(exported):
    out, files, ids = exported
    table = pq.read_table(os.path.join(out, "programs.parquet")).to_pylist()
    for f in files:
        progs = json_lines(cli("progs", "-i", f, "--json").stdout)
        mine = [r for r in table if r["recording"] == ids[f]]
        assert len(mine) == len(progs) > 0
        for row, p in zip(mine, progs):
            assert (row["id"], row["tag"], row["name"] or "", row["type"], row["loaded_ns"],
                    row["unloaded_ns"], row["captured"], row["capture"], row["reason"]) == \
                (p["id"], p["tag"], p["name"] or "", p["type"], p["loaded_ns"],
                 p["unloaded_ns"], p["captured"], p["capture"], p["reason"])
            assert row["jited_len"] == sum(fn["len"] for fn in p["funcs"])
        # the README's query: programs that lived under 1 ms
        brief = sum(1 for p in progs if p["loaded_ns"] is not None and p["unloaded_ns"]
                    is not None and p["unloaded_ns"] - p["loaded_ns"] < 1_000_000)
        assert query(out, f"SELECT count(*) FROM programs WHERE recording = '{ids[f]}' AND "
                          f"unloaded_ns - loaded_ns < 1000000") == [(brief,)]
        # and through SQL: the count per recording
        assert query(out, f"SELECT count(*) FROM programs WHERE recording = '{ids[f]}'") == \
            [(len(progs),)]
        r = cli("sql", "--parquet", str(out), "--json",
                f"SELECT count(*) AS n, count(*) FILTER (WHERE captured) AS captured FROM "
                f"programs WHERE recording = '{ids[f]}'")
        assert json_lines(r.stdout) == [{"n": len(progs),
                                         "captured": sum(p["captured"] for p in progs)}]


def test_functions_carry_each_programs_jit_image(exported):
    out, files, ids = exported
    for f in files:
        progs = json_lines(cli("progs", "-i", f, "--json").stdout)
        want = sorted((p["id"], k, fn["addr"], fn["len"], fn["jited"])
                      for p in progs for k, fn in enumerate(p["funcs"]))
        got = sorted((p, k, a, n, j.hex() if j is not None else None) for p, k, a, n, j in
                     query(out, f"SELECT program, func, addr, len, jited FROM functions "
                                f"WHERE recording = '{ids[f]}'"))
        assert got == want and want


def _live_bpf(key: tuple) -> bool:
    """A kernel symbol of /proc/kallsyms' [bpf] module: a program loaded when kallsyms was
    read, not one the recording saw.  Each read of the live kallsyms (report's, export's)
    lists the programs of that moment, which change while other programs load and unload
    on the machine; such samples are compared in total only."""
    return key[1] == "[bpf]" and key[2] == "module"


def test_samples_per_symbol_are_the_report(exported):
    out, files, ids = exported
    for f in files:
        report = collections.Counter()
        rows = json_lines(cli("report", "-i", f, "--json").stdout)
        for row in rows:
            report[(row["symbol"], row["dso"], row["kind"])] += row["samples"]
        got = {(s, d, k): n for s, d, k, n in query(
            out, f"SELECT symbol, dso, kind, count(*) FROM samples WHERE recording = "
                 f"'{ids[f]}' GROUP BY ALL")}
        assert {k: n for k, n in got.items() if not _live_bpf(k)} == \
            {k: n for k, n in report.items() if not _live_bpf(k)} and got
        assert sum(got.values()) == sum(report.values())
        # the rows textrace's report keeps apart (symbols of one name at two addresses)
        # stay apart by symbol_addr
        kept = sum(1 for r in rows if not _live_bpf((r["symbol"], r["dso"], r["kind"])))
        assert query(out, f"SELECT count(*) FROM (SELECT DISTINCT symbol, dso, kind, "
                          f"symbol_addr FROM samples WHERE recording = '{ids[f]}' AND NOT "
                          f"(dso = '[bpf]' AND kind = 'module'))") == [(kept,)]


def test_sample_fields_are_the_files(exported):
    out, files, ids = exported
    for f in files:
        a = sample_arrays(PerfData.open(f), callchains=False)
        t = pq.read_table(os.path.join(out, "samples.parquet"),
                          filters=[("recording", "=", ids[f])])
        assert t.column("time").to_pylist() == a.time.astype("int64").tolist()
        assert t.column("ip").to_pylist() == a.ip.tolist()
        assert t.column("cpu").to_pylist() == a.cpu.tolist()
        assert t.column("tid").to_pylist() == a.tid.tolist()
        assert t.column("pid").to_pylist() == a.pid.tolist()


def test_two_recordings_keep_their_rows_apart(exported, tmp_path):
    out, files, ids = exported
    assert len(set(ids.values())) == 2
    per = dict(query(out, "SELECT recording, count(*) FROM samples GROUP BY ALL"))
    for f in files:
        assert per[ids[f]] == len(sample_arrays(PerfData.open(f), callchains=False))
        (n,) = query(out, f"SELECT samples FROM recordings WHERE recording = '{ids[f]}'")[0]
        assert n == per[ids[f]]
    # every row of every table belongs to one of the two
    for t in TABLES:
        assert set(r for (r,) in query(out, f"SELECT DISTINCT recording FROM {t}")) <= \
            set(ids.values())
    # the same file under another name, exported on its own: the same id
    copy = tmp_path / "copy.data"
    shutil.copy(files[1], copy)
    cli("export", "-i", str(copy), "--parquet", str(tmp_path / "t"))
    assert query(tmp_path / "t", "SELECT recording FROM recordings") == [(ids[files[1]],)]
    # two exports queried together with textrace sql
    r = cli("sql", "--parquet", str(out), "--parquet", str(tmp_path / "t"), "--json",
            "SELECT recording, count(*) AS n FROM recordings GROUP BY ALL ORDER BY n, "
            "recording")
    assert sorted((d["recording"], d["n"]) for d in json_lines(r.stdout)) == sorted(
        [(ids[files[0]], 1), (ids[files[1]], 2)])


def test_recordings_name_the_host_kernel_and_clock(exported):
    out, files, ids = exported
    rows = {r["file"]: r for r in pq.read_table(os.path.join(out, "recordings.parquet"))
            .to_pylist()}
    uname = os.uname()
    for f in files:
        r = rows[f]
        assert (r["host"], r["kernel_release"], r["arch"]) == (uname.nodename,
                                                                uname.release, uname.machine)
        assert r["size"] == os.path.getsize(f)
        assert r["kernel_text"] is not None
    assert rows[files[0]]["writer"].startswith("perf ") and rows[files[0]]["capture"] is None
    tr = rows[files[1]]
    assert (tr["writer"], tr["clock"], tr["clockid"], tr["capture"]) == \
        ("textrace", "monotonic", 1, "kernel")
    # clock 0 of CLOCK_MONOTONIC is this boot: before now, after the first sample's wall time
    with open("/proc/uptime") as u:
        up = float(u.read().split()[0])
    import time
    boot = time.time() - up
    assert abs(tr["clock_zero"].timestamp() - boot) < 5


def test_samples_name_each_program_by_time_at_a_reused_address(exported, reuse):
    out, files, ids = exported
    _path, facts = reuse
    rid = ids[files[1]]
    (a_id, addr, size), (b_id, _, _) = facts["a"], facts["b"]
    got = dict(query(out, f"SELECT program, count(*) FROM samples WHERE recording = '{rid}' "
                          f"AND ip >= {addr} AND ip < {addr + size} GROUP BY ALL"))
    assert set(got) == {a_id, b_id} and min(got.values()) > 50
    # each sample's program is the one alive at its time
    bad = query(out, f"SELECT count(*) FROM samples s JOIN programs p ON p.recording = "
                     f"s.recording AND p.id = s.program WHERE s.recording = '{rid}' AND "
                     f"(s.time < p.loaded_ns OR s.time >= p.unloaded_ns)")
    assert bad == [(0,)]
    by_program = {r["symbol"]: r["samples"] for r in json_lines(
        cli("report", "-i", files[1], "--sort", "program", "--json").stdout)
        if r["kind"] == "bpf"}
    sql = dict(query(out, f"SELECT symbol, count(*) FROM samples WHERE recording = '{rid}' "
                          f"AND program IS NOT NULL GROUP BY ALL"))
    assert sql == by_program


def test_captured_images_are_code_versions_over_each_programs_life(exported, reuse):
    out, files, ids = exported
    _path, facts = reuse
    rid = ids[files[1]]
    rows = query(out, f"SELECT v.program, v.start, v.bytes, v.valid_from, v.valid_to, v.how, "
                      f"f.jited, p.loaded_ns, p.unloaded_ns FROM code_versions v "
                      f"JOIN functions f ON f.recording = v.recording AND f.program = v.program "
                      f"AND f.addr = v.start JOIN programs p ON p.recording = v.recording AND "
                      f"p.id = v.program WHERE v.recording = '{rid}' AND v.program IN "
                      f"({facts['a'][0]}, {facts['b'][0]})")
    assert len(rows) == 2
    for prog, start, data, frm, to, how, jited, loaded, unloaded in rows:
        assert (start, data, frm, to, how) == (facts["a"][1], jited, loaded, unloaded,
                                               "capture")


def test_code_versions_follow_pokes_forwards_and_backwards(poked):
    """A JIT image captured at load and the crafted tail-call pokes in it: three versions,
    their bytes and intervals; poked kernel text with no image: one version per state."""
    a, size = PROG_A[0], PROG_A[1]
    tgt, byp = BY_NAME["tail call target"], BY_NAME["tail call bypass"]
    at_load = bytearray(b"\xcc" * size)
    at_load[0x30:0x35] = byp.old
    at_load[0x40:0x45] = tgt.old
    history, _ = load_history(PerfData.open(poked))
    history.add_images([Image(a, bytes(at_load), T0, "bpf:901")])
    versions = code_versions(history)
    mine = [v for v in versions if a <= v.start < a + size]
    # every byte of the image at every time is given by exactly one version
    for t in (T0, tgt.time - 1, tgt.time, byp.time - 1, byp.time, byp.time + MS):
        buf = bytearray(size)
        covered = 0
        for v in mine:
            if (v.valid_from is None or v.valid_from <= t) and (v.valid_to is None or
                                                                t < v.valid_to):
                buf[v.start - a:v.end - a] = v.data
                covered += len(v.data)
        assert covered == size and bytes(buf) == history.read(a, size, t)
    site = [v for v in mine if v.start == a + 0x40]
    assert [(v.data, v.valid_from, v.valid_to, v.how) for v in site] == [
        (tgt.old, T0, tgt.time, "capture"), (tgt.new, tgt.time, None, "text_poke")]
    assert {v.prog_id for v in mine} == {901}
    jl_on, jl_off = BY_NAME["jump_label on"], BY_NAME["jump_label off"]
    jl = [(v.data, v.valid_from, v.valid_to, v.how) for v in versions
          if v.start == jl_on.addr]
    assert jl == [(jl_on.old, None, jl_on.time, "text_poke"),
                  (jl_on.new, jl_on.time, jl_off.time, "text_poke"),
                  (jl_off.new, jl_off.time, None, "text_poke")]


def test_pokes_table_is_textrace_pokes(poked, tmp_path):
    out = tmp_path / "t"
    cli("export", "-i", str(poked), "--parquet", str(out))
    want = json_lines(cli("pokes", "-i", str(poked), "--json").stdout)
    got = pq.read_table(out / "pokes.parquet").to_pylist()
    assert len(got) == len(want) == len(BY_NAME)
    for g, w in zip(got, want):
        assert (g["time"], g["addr"], g["kind"], g["why"], g["old"].hex(), g["new"].hex(),
                g["symbol"], g["reported"], [g["window_start"], g["window_end"]],
                g["batch"]) == (w["time"], w["addr"], w["kind"], w["why"], w["old"], w["new"],
                                w["symbol"], w["reported"], w["ambiguous"], w["batch"])
    # pokes per kind per second, the README's query
    r = cli("sql", "--parquet", str(out), "--json",
            "SELECT kind, time // 1000000000 AS second, count(*) AS n FROM pokes "
            "GROUP BY ALL ORDER BY kind")
    counts = collections.Counter(w["kind"] for w in want)
    assert {d["kind"]: d["n"] for d in json_lines(r.stdout)} == dict(counts)


def test_sql_on_recordings_builds_only_the_tables_it_names(corpus):
    f = str(corpus.path("bpf-probe"))
    r = cli("sql", "-i", f, "--json", "SELECT count(*) AS n FROM programs")
    assert json_lines(r.stdout) == [{"n": len(json_lines(cli("progs", "-i", f, "--json")
                                                         .stdout))}]
    r = cli("sql", "-i", f, "SELECT * FROM samples", check=False)
    assert r.returncode == 0
    r = cli("sql", "-i", f, "SELECT * FROM pokes JOIN nothing USING (addr)", check=False)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "nothing" in r.stderr


def test_sql_prints_a_table_small_or_big(exported):
    out, files, ids = exported
    r = cli("sql", "--parquet", str(out), "SELECT recording, file, kernel_text, samples "
                                          "FROM recordings ORDER BY file")
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["recording", "file", "kernel_text", "samples"]
    assert len(lines) == 3 and lines[1].split()[2].startswith("0xffffffff")
    # a big result is laid out the same way, without rich (which takes ~1 ms a row)
    (n,) = query(out, "SELECT count(*) FROM samples")[0]
    assert n > 1000
    r = cli("sql", "--parquet", str(out), "SELECT time, ip, symbol, program FROM samples "
                                          "ORDER BY recording, time")
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["time", "ip", "symbol", "program"] and len(lines) == n + 1
    want = query(out, "SELECT time, ip, program FROM samples ORDER BY recording, time")
    for line, (t, ip, prog) in zip(lines[1:], want):
        cols = line.split()
        assert int(cols[0]) == t and int(cols[1], 16) == ip
        assert cols[-1] == (str(prog) if prog is not None else "-")


def test_export_shows_progress_on_a_terminal_only(corpus, tmp_path):
    f = str(corpus.path("system-wide"))
    master, slave = pty.openpty()
    p = subprocess.Popen([*TEXTRACE, "export", "-i", f, "--parquet", str(tmp_path / "a")],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    chunks = []
    while select.select([master], [], [], 60)[0]:
        try:
            data = os.read(master, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    assert p.wait(timeout=60) == 0
    os.close(master)
    text = b"".join(chunks).decode(errors="replace")
    assert "samples" in text and "\x1b[" in text and "wrote" in text
    r = cli("export", "-i", f, "--parquet", str(tmp_path / "b"))
    assert r.stderr.count("\n") == 1 and "\x1b[" not in r.stderr


def test_bad_input_is_one_line(tmp_path):
    bad = tmp_path / "bad.data"
    bad.write_bytes(b"PERFILE2" + b"\x00" * 200)
    r = cli("export", "-i", str(bad), "--parquet", str(tmp_path / "t"), check=False)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and str(bad) in r.stderr
    r = cli("sql", "-i", str(bad), "SELECT * FROM programs", check=False)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and str(bad) in r.stderr
