"""The store's database: one SQLite file in WAL mode, its schema, and the daemon's lock.

Why SQLite in WAL mode with synchronous=NORMAL: a commit appends its pages to the
write-ahead log and is durable against the death of the process as soon as it returns (the
log is in the kernel's page cache), so a SIGKILLed daemon loses only what it had not yet
committed, and it commits at least once a second.  After a power loss SQLite's recovery
keeps every transaction whose log frames reached the disk and drops a torn tail by the
frames' checksums: the store is always consistent, never half-written.  NORMAL rather than
FULL spares an fsync per commit; the log is fsynced at each checkpoint, which the daemon
forces every CHECKPOINT_SECONDS, bounding what a power loss can take.  A second writer is
kept out by an exclusive flock on DIR/lock, held for the daemon's life (the kernel drops it
when the process dies, however it dies).

Kernel addresses are u64; SQLite integers are i64, so addresses are stored as their
two's-complement i64 (`s64`) and read back with `u64`.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3

from ..errors import TextraceError

DB_NAME = "store.db"
LOCK_NAME = "lock"
SCHEMA_VERSION = 1
CHECKPOINT_SECONDS = 10

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value);
-- one row per boot the daemon ran in (/proc/sys/kernel/random/boot_id)
CREATE TABLE IF NOT EXISTS boots(
    id INTEGER PRIMARY KEY, boot_id TEXT UNIQUE, release TEXT,
    first_ns INTEGER, last_ns INTEGER, clock TEXT);
-- /proc/kallsyms without BPF programs' lines (they are the loads), zstd; one per change
CREATE TABLE IF NOT EXISTS kallsyms(
    id INTEGER PRIMARY KEY, boot INTEGER, time_ns INTEGER, digest BLOB, data BLOB,
    UNIQUE(boot, digest));
-- BTF objects by content
CREATE TABLE IF NOT EXISTS btf(digest BLOB PRIMARY KEY, data BLOB);
-- program images up to placement (normalize.py); evicted images keep their row, not code
CREATE TABLE IF NOT EXISTS images(
    id INTEGER PRIMARY KEY, digest BLOB UNIQUE, tag BLOB, func_lens BLOB, prog_tags BLOB,
    btf BLOB, bytes INTEGER, evicted INTEGER DEFAULT 0);
-- an image's code, a row of its own: eviction deletes it (emptying a large row in place
-- would leave most of its b-tree page unused, ~4 KiB per evicted image)
CREATE TABLE IF NOT EXISTS image_code(
    image INTEGER PRIMARY KEY, code BLOB, relocs BLOB, xlated BLOB, func_info BLOB,
    line_info BLOB, jited_line_info BLOB);
-- bpf_prog_info's scalar fields as loads share them (per-load ones zeroed), with the
-- program's name, type and ksym names: loads of one image may differ in these
CREATE TABLE IF NOT EXISTS infos(
    id INTEGER PRIMARY KEY, digest BLOB UNIQUE, name TEXT, type INTEGER, info BLOB,
    info_len INTEGER, arrays INTEGER, ksyms TEXT);
-- one row per program load; times are ns on perf's default clock (perf_clock) of the boot
CREATE TABLE IF NOT EXISTS loads(
    id INTEGER PRIMARY KEY, boot INTEGER, prog_id INTEGER, tag BLOB, image INTEGER,
    info INTEGER, addrs BLOB, load_ns INTEGER, unload_ns INTEGER, capture_ns INTEGER, method TEXT,
    reason TEXT, load_time INTEGER, uid INTEGER, btf_id INTEGER, map_ids BLOB);
CREATE INDEX IF NOT EXISTS loads_by_prog ON loads(boot, prog_id);
CREATE INDEX IF NOT EXISTS loads_by_image ON loads(image);
-- out-of-line kernel code announced by KSYMBOL (trampolines, dispatchers, ftrace, kprobe)
CREATE TABLE IF NOT EXISTS ool(
    id INTEGER PRIMARY KEY, boot INTEGER, addr INTEGER, len INTEGER, name TEXT,
    ksym_type INTEGER, reg_ns INTEGER, unreg_ns INTEGER, code BLOB, code_ns INTEGER,
    evicted INTEGER DEFAULT 0);
-- code changes: TEXT_POKE records (reported=1) and changes the daemon found (reported=0,
-- known to have happened in (after_ns, time_ns])
CREATE TABLE IF NOT EXISTS pokes(
    id INTEGER PRIMARY KEY, boot INTEGER, time_ns INTEGER, addr INTEGER, old BLOB,
    new BLOB, reported INTEGER, after_ns INTEGER, prog_id INTEGER);
"""


def s64(addr: int) -> int:
    """A u64 kernel address as the i64 SQLite can hold (two's complement)."""
    return addr - (1 << 64) if addr >= 1 << 63 else addr


def u64(v: int) -> int:
    """An address read back from SQLite's i64 as the kernel's u64."""
    return v & ((1 << 64) - 1)


def store_path(directory: str) -> str:
    """The database file of the store in `directory`."""
    return os.path.join(directory, DB_NAME)


def connect(directory: str, *, create: bool = False) -> sqlite3.Connection:
    """The store's database; `create` makes DIR (0700) and the file (0600) if missing."""
    path = store_path(directory)
    if create:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        if not os.path.exists(path):
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    elif not os.path.exists(path):
        raise TextraceError("no textrace store here (run textrace daemon --store DIR)",
                            file=path)
    try:
        con = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        if create:
            # set before the first table: it cannot be turned on later without a VACUUM
            con.execute("PRAGMA auto_vacuum=INCREMENTAL")
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=NORMAL")
        con.execute("PRAGMA busy_timeout=5000")
        if create:
            con.executescript(SCHEMA)
            con.execute("INSERT OR IGNORE INTO meta VALUES('schema', ?)", (SCHEMA_VERSION,))
            con.execute("INSERT OR IGNORE INTO meta VALUES('evicted', 0)")
            con.execute("INSERT OR IGNORE INTO meta VALUES('evicted_bytes', 0)")
        else:
            con.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
    except sqlite3.DatabaseError as e:
        raise TextraceError(f"not a textrace store ({e})", file=path) from None
    for name in (path, path + "-wal", path + "-shm"):
        if os.path.exists(name):
            os.chmod(name, 0o600)
    return con


class StoreLock:
    """An exclusive flock on DIR/lock: one daemon per store.  The file says which pid."""

    def __init__(self, directory: str):
        os.makedirs(directory, mode=0o700, exist_ok=True)
        self.path = os.path.join(directory, LOCK_NAME)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self.fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(self.fd)
            raise TextraceError(f"the store is in use by another textrace daemon (pid "
                                f"{holder}); one daemon per store", file=directory,
                                field="--store") from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        """Empty the pid and drop the flock (closing the fd drops it); idempotent."""
        if self.fd >= 0:
            os.ftruncate(self.fd, 0)
            os.close(self.fd)
            self.fd = -1
