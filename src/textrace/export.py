"""`textrace export`: the tables of one or many recordings as Parquet files, one per table.

Sources are read one at a time and each table's builder appends its batches to that
table's file (pyarrow's ParquetWriter, a row group per batch), so memory is one source's
history and samples, not all of them.  Columns are plain Parquet types (INT32/INT64,
UINT64 for addresses, BYTE_ARRAY strings and binaries, TIMESTAMP micros UTC) that Spark,
Trino and DuckDB read as they are; zstd-compressed.  Files are 0600 and the directory
0700: they hold kernel addresses.
"""

from __future__ import annotations

import os
from typing import Callable, Iterable

from .errors import TextraceError
from .tables import TABLES, Batch, Coded, Masked, Source, StoreSource, builders

_INT64_MAX = (1 << 63) - 1
_TYPES = {"string": "string", "int32": "int32", "int64": "int64", "uint64": "uint64",
          "bool": "bool_", "binary": "binary"}


def schema(table: str):
    """The Arrow schema of `table`, from TABLES (column docs kept as field metadata)."""
    import pyarrow as pa
    fields = []
    for name, kind, doc in TABLES[table]:
        if kind == "timestamp":
            t = pa.timestamp("us", tz="UTC")
        else:
            t = getattr(pa, _TYPES[kind])()
        fields.append(pa.field(name, t, metadata={"doc": doc} if doc else None))
    return pa.schema(fields)


def _column(values, field):
    import numpy as np
    import pyarrow as pa
    if isinstance(values, Coded):
        # strings as a dictionary: Parquet writes it as dictionary-encoded BYTE_ARRAY
        # (readers see strings); far cheaper than a Python string per row
        return pa.DictionaryArray.from_arrays(
            pa.array(values.codes, type=pa.int32()), pa.array(values.names, pa.string())
        ).cast(pa.dictionary(pa.int32(), pa.string()))
    if isinstance(values, Masked):
        return pa.array(np.asarray(values.values), type=field.type, mask=values.null)
    if isinstance(values, pa.Array):
        return values
    if isinstance(values, np.ndarray):
        return pa.array(values, type=field.type)
    if field.type == pa.int64():
        # a time beyond int64 (perf's synthesized records can carry an uninitialised
        # sample_id) is the far future, as the history takes it (regions._ns)
        values = [v if v is None or v <= _INT64_MAX else _INT64_MAX for v in values]
    return pa.array(values, type=field.type)


def to_record_batch(table: str, batch: Batch):
    """One builder batch as an Arrow RecordBatch of the table's schema (string columns
    given as Coded stay dictionary-typed: the same strings to every reader)."""
    import pyarrow as pa
    sch = schema(table)
    cols, fields = [], []
    for field in sch:
        col = _column(batch[field.name], field)
        cols.append(col)
        fields.append(field.with_type(col.type) if pa.types.is_dictionary(col.type) else field)
    return pa.RecordBatch.from_arrays(cols, schema=pa.schema(fields))


class ParquetTables:
    """One ParquetWriter per table in `directory`, opened at the first batch."""

    def __init__(self, directory: str, tables: Iterable[str] = TABLES):
        self.directory = directory
        self.tables = list(tables)
        self._writers: dict[str, object] = {}
        self.rows = dict.fromkeys(self.tables, 0)
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
        except OSError as e:
            raise TextraceError(f"cannot create {directory}: {e.strerror}",
                                file=directory) from None

    def path(self, table: str) -> str:
        """The table's file: DIR/<table>.parquet."""
        return os.path.join(self.directory, f"{table}.parquet")

    def write(self, table: str, batch: Batch) -> None:
        """Append one builder batch to the table's file, opening it at the first."""
        import pyarrow as pa
        import pyarrow.parquet as pq
        rb = to_record_batch(table, batch)
        w = self._writers.get(table)
        if w is None:
            path = self.path(table)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.close(fd)
            os.chmod(path, 0o600)
            # string columns stay dictionaries: Parquet stores them dictionary-encoded
            # as STRING (store_schema=False: no Arrow-only metadata), every reader sees
            # strings, and no batch is turned into a Python-free string per row
            w = self._writers[table] = pq.ParquetWriter(
                path, rb.schema, compression="zstd", store_schema=False,
                write_statistics=True)
        if rb.schema != w.schema:
            rb = rb.cast(w.schema)
        w.write_batch(rb, row_group_size=max(1, rb.num_rows))
        self.rows[table] += rb.num_rows

    def close(self) -> None:
        """Close every writer; a table no source gave a row still gets its (empty) file."""
        import pyarrow as pa
        for table in self.tables:
            if table not in self._writers:
                self.write(table, {f.name: pa.array([], type=f.type) for f in schema(table)})
        for w in self._writers.values():
            w.close()


def export(paths: list[str], directory: str, *, tables: Iterable[str] = TABLES,
           salvage: bool = False, stores: Iterable[str] = (),
           progress: Callable[[str, str, int, int], None] | None = None) -> dict[str, int]:
    """Write the `tables` of every recording in `paths`, and of every boot of each store
    in `stores` (daemon store directories), to `directory`; rows per table.
    `progress(path, step, done, total)` is called as each step begins (total None: how
    long it takes is not known) and as samples are written."""
    out = ParquetTables(directory, tables)

    def sources():
        for path in paths:
            if progress is not None:
                progress(path, "reading", 0, None)
            yield path, Source.open(path, salvage=salvage)
        for store in stores:
            for src in StoreSource.boots(store):
                yield f"{store} boot {src.recording[:8]}", src

    try:
        for label, src in sources():
            made = builders(src)
            for table in out.tables:
                if progress is not None and table != "samples":
                    progress(label, table, 0, None)
                if table == "samples":
                    def step(done, total, label=label):
                        if progress is not None:
                            progress(label, "samples", done, total)
                    batches = made[table](src, step)
                else:
                    batches = made[table](src)
                for batch in batches:
                    out.write(table, batch)
            del src
    finally:
        out.close()
    return out.rows
