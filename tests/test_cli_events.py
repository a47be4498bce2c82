"""`textrace events`: every record in time order, text or JSON lines, from a file or a pipe."""

from __future__ import annotations

import json
import subprocess
import sys

from oracle import script_timeline
from textrace.perf.reader import PerfData


def textrace(*args: str, stdin=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "textrace", *args], capture_output=True,
                          stdin=stdin, timeout=120)


def test_json_lines_carry_type_time_and_fields(corpus):
    path = corpus.path("bpf-probe")
    r = textrace("events", "-i", str(path), "--json")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(rows) == sum(1 for _ in PerfData.open(path).records())
    kinds = {row["type"] for row in rows}
    assert {"SAMPLE", "KSYMBOL", "BPF_EVENT", "MMAP2", "COMM", "FINISHED_ROUND"} <= kinds
    ksym = next(row for row in rows if row["type"] == "KSYMBOL")
    assert {"time", "cpu", "pid", "tid", "addr", "len", "ksym_type", "flags", "name"} <= \
        ksym.keys()
    bpf = next(row for row in rows if row["type"] == "BPF_EVENT")
    assert {"event_type", "prog_id", "tag"} <= bpf.keys() and len(bpf["tag"]) == 16
    # the timed records come in the order perf delivers them
    timed = [(row["time"], row["type"]) for row in rows
             if row["type"] in ("KSYMBOL", "BPF_EVENT")]
    theirs = [(t["time"], t["record"]) for t in script_timeline(path)
              if t["record"] in ("KSYMBOL", "BPF_EVENT")]
    assert timed == theirs


def test_text_output_has_one_line_per_record(corpus):
    path = corpus.path("callchain")
    r = textrace("events", "-i", str(path))
    assert r.returncode == 0
    lines = r.stdout.decode().splitlines()
    assert len(lines) == sum(1 for _ in PerfData.open(path).records())
    sample = next(l for l in lines if " SAMPLE " in l)
    assert "ip=0x" in sample and "callchain=[0x" in sample


def test_pipe_mode_from_stdin(corpus):
    path = corpus.path("pipe")
    with open(path, "rb") as f:
        r = textrace("events", "-i", "-", "--json", stdin=f)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert rows[0]["type"] == "HEADER_ATTR"
    assert sum(row["type"] == "SAMPLE" for row in rows) == \
        sum(r.type_name == "SAMPLE" for r in PerfData.open(path).records())


def test_live_pipe_from_perf_record(tmp_path):
    """perf record -o - | textrace events -i -: the stream is read as perf writes it."""
    perf = subprocess.Popen(["perf", "record", "-q", "-o", "-", "-e", "cpu-clock", "--",
                             sys.executable, "-c", "sum(range(3_000_000))"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    r = textrace("events", "-i", "-", "--json", stdin=perf.stdout)
    perf.wait()
    assert r.returncode == 0, r.stderr
    types = [json.loads(line)["type"] for line in r.stdout.splitlines()]
    assert "SAMPLE" in types and "COMM" in types
