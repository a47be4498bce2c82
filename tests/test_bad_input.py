"""Bad input: wrong magic, truncation, overrunning sizes, absurd counts, bit flips.

Every failure is one TextraceError naming file, offset and field; the CLI prints one line
and exits 2; nothing hangs or raises anything else.  A property test mutates real files
made by perf and reads them completely, within a bounded time.
"""

from __future__ import annotations

import struct
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from textrace.errors import FormatError, TextraceError
from textrace.perf.bulk import sample_arrays
from textrace.perf.reader import PerfData


def read_everything(data: bytes, name: str = "mutant.data") -> None:
    """Everything a user can ask of a file: records in both orders, samples, features."""
    p = PerfData(data, path=name)
    for _ in p.records_by_time():
        pass
    sample_arrays(p)
    for feat in p.features:
        p.feature(feat)


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "textrace", *args], capture_output=True,
                          text=True, timeout=60)


@pytest.fixture(scope="module")
def small(corpus) -> bytes:
    return corpus.path("callchain").read_bytes()


@pytest.fixture(scope="module")
def small_pipe(corpus) -> bytes:
    return corpus.path("pipe").read_bytes()


def test_wrong_magic_names_file_offset_and_field(tmp_path):
    f = tmp_path / "x.data"
    f.write_bytes(b"NOTPERF!" + b"\0" * 200)
    r = cli("events", "-i", str(f))
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert str(f) in r.stderr and "offset 0x0" in r.stderr and "magic" in r.stderr


def test_truncated_file_fails_then_salvages_up_to_the_damage(tmp_path, small):
    full = PerfData(small, path="full")
    n_full = sum(1 for _ in full.records())
    data = full.header.data
    cut = tmp_path / "cut.data"
    cut.write_bytes(small[:data.offset + data.size // 2])  # inside the records
    r = cli("events", "-i", str(cut))
    assert r.returncode == 2 and "truncated" in r.stderr and "Traceback" not in r.stderr
    salvaged = PerfData.open(cut, salvage=True)
    recs = list(salvaged.records())
    assert 0 < len(recs) < n_full
    assert salvaged.stats.damage is not None
    # every salvaged record is one the intact file has, in the same place
    intact = {r.offset: r for r in full.records()}
    assert all(intact[r.offset] == r for r in recs)
    r = cli("events", "-i", str(cut), "--salvage", "--json")
    assert r.returncode == 0 and len(r.stdout.splitlines()) == len(recs)
    assert "warning" in r.stderr


def test_record_size_overrunning_data_is_reported_at_its_offset(small):
    p = PerfData(small, path="f")
    victim = next(r for r in p.records() if r.type_name == "SAMPLE").offset
    bad = bytearray(small)
    struct.pack_into("<H", bad, victim + 6, 0xFFF8)
    with pytest.raises(FormatError) as e:
        read_everything(bytes(bad), "f")
    assert e.value.file == "f" and e.value.offset is not None


def test_record_size_below_header_is_an_error(small):
    p = PerfData(small, path="f")
    victim = next(r for r in p.records() if r.type_name == "MMAP2").offset
    bad = bytearray(small)
    struct.pack_into("<H", bad, victim + 6, 4)
    with pytest.raises(FormatError) as e:
        list(PerfData(bytes(bad), path="f").records())
    assert e.value.offset == victim and e.value.field == "header.size"


def test_absurd_callchain_count_is_an_error_not_an_allocation(small):
    p = PerfData(small, path="f")
    victim = next(r for r in p.records() if r.type_name == "SAMPLE" and r.callchain)
    attr = p.attrs[victim.attr_index].attr
    # ip, tid, time, period (and id) precede the callchain's nr for perf record -g
    from textrace.perf.abi import SampleType as S
    before = sum(8 for b in (S.IDENTIFIER, S.IP, S.TID, S.TIME, S.ADDR, S.ID, S.STREAM_ID,
                             S.CPU, S.PERIOD) if attr.sample_type & b)
    bad = bytearray(small)
    struct.pack_into("<Q", bad, victim.offset + 8 + before, 1 << 60)
    with pytest.raises(FormatError) as e:
        list(PerfData(bytes(bad), path="f").records())
    assert e.value.field == "callchain.nr"
    with pytest.raises(FormatError):
        sample_arrays(PerfData(bytes(bad), path="f"))


def test_attr_section_overrun_is_an_error(small):
    bad = bytearray(small)
    struct.pack_into("<Q", bad, 32, 1 << 40)  # attrs.size
    with pytest.raises(FormatError) as e:
        PerfData(bytes(bad), path="f")
    assert e.value.field == "header.attrs"


def test_feature_section_past_eof_is_an_error(small):
    p = PerfData(small, path="f")
    table = p.header.feature_table_offset
    bad = bytearray(small)
    struct.pack_into("<Q", bad, table + 8, 1 << 50)  # first feature's size
    with pytest.raises(FormatError) as e:
        PerfData(bytes(bad), path="f")
    assert e.value.offset == table and "feature" in e.value.field


def test_empty_and_tiny_files(tmp_path):
    for content in (b"", b"PERFILE2", b"PERFILE2" + struct.pack("<Q", 104)):
        f = tmp_path / "tiny.data"
        f.write_bytes(content)
        r = cli("events", "-i", str(f))
        assert r.returncode == 2 and r.stderr.startswith("textrace: ") and \
            r.stderr.count("\n") == 1, r.stderr


MUTATION = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 1 << 30), st.integers(0, 7)),
    st.tuples(st.just("cut"), st.integers(0, 1 << 30), st.just(0)),
    st.tuples(st.just("u64"), st.integers(0, 1 << 30),
              st.sampled_from([0, 1, 7, 8, 0xFFFF, 1 << 31, 1 << 63, (1 << 64) - 1])),
    st.tuples(st.just("u16"), st.integers(0, 1 << 30), st.sampled_from([0, 1, 8, 0xFFFF])),
)


def mutate(data: bytes, mutations) -> bytes:
    b = bytearray(data)
    for kind, where, what in mutations:
        if not b:
            break
        at = where % len(b)
        if kind == "flip":
            b[at] ^= 1 << what
        elif kind == "cut":
            del b[at:]
        elif kind == "u64" and at + 8 <= len(b):
            struct.pack_into("<Q", b, at, what)
        elif kind == "u16" and at + 2 <= len(b):
            struct.pack_into("<H", b, at, what)
    return bytes(b)


@settings(max_examples=300, deadline=2000, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow, HealthCheck.data_too_large])
@given(mutations=st.lists(MUTATION, min_size=1, max_size=4))
def test_mutated_real_files_fail_only_with_textrace_errors(small, small_pipe, mutations):
    for original in (small, small_pipe):
        data = mutate(original, mutations)
        for salvage in (False, True):
            try:
                p = PerfData(data, path="mutant.data", salvage=salvage)
                for _ in p.records_by_time():
                    pass
                sample_arrays(p)
                for feat in p.features:
                    p.feature(feat)
            except TextraceError as e:
                assert e.file == "mutant.data"
                assert e.offset is not None or e.field is not None or "mutant" in str(e)
