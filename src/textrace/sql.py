"""`textrace sql`: SQL over the tables of one or many recordings, with DuckDB embedded.

The tables are the Parquet files `export` writes (views.tables.TABLES), read where they
are: an export directory, or one made now in a private temporary directory from the
recordings given (only the tables the query names are built).  DuckDB runs in-process
with its built-in extensions only: none is installed or loaded from the network.

Results come out as JSON lines (DuckDB makes each row's JSON; blobs as hex) or as text
columns (addresses, UINT64, as hex; blobs as hex; NULL as '-').
"""

from __future__ import annotations

import os
import re
from typing import Iterator

from .errors import TextraceError
from .views.tables import TABLES

DUCKDB_CONFIG = {
    # built-in extensions only, never fetched: no network, nothing installed
    "autoinstall_known_extensions": "false",
    "autoload_known_extensions": "false",
    "allow_community_extensions": "false",
}


def tables_in(query: str) -> list[str]:
    """The tables a query names (a word match; a name in a string literal counts too,
    which only builds a table more)."""
    return [t for t in TABLES if re.search(rf"\b{t}\b", query, re.IGNORECASE)]


def _quote(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _ident(s: str) -> str:
    return '"' + s.replace('"', '""') + '"'


def connect(directories: list[str]):
    """A DuckDB connection with a view per table over the Parquet files of `directories`
    (each an export; their rows side by side).  A table missing from every directory is
    left out, and a query naming it fails with DuckDB's own message."""
    import duckdb
    con = duckdb.connect(":memory:", config=DUCKDB_CONFIG)
    for table in TABLES:
        files = [os.path.join(d, f"{table}.parquet") for d in directories]
        files = [f for f in files if os.path.exists(f)]
        if files:
            listed = "[" + ", ".join(_quote(f) for f in files) + "]"
            con.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet({listed}, "
                        f"union_by_name = true)")
    return con


def run(con, query: str):
    """The query's result as a DuckDB relation; None for a statement without rows."""
    import duckdb
    try:
        return con.sql(query)
    except duckdb.Error as e:
        raise TextraceError(f"SQL: {str(e).splitlines()[0]}", field="QUERY") from None


def _fetch(rel, batch_rows: int = 1 << 16) -> Iterator[list]:
    """The relation's first column in chunks, as Python values."""
    import duckdb
    try:
        reader = rel.fetch_record_batch(batch_rows)
        for rb in reader:
            yield rb.column(0).to_pylist()
    except duckdb.Error as e:
        raise TextraceError(f"SQL: {str(e).splitlines()[0]}", field="QUERY") from None


def json_lines(rel) -> Iterator[str]:
    """One JSON object per row, made by DuckDB (blobs as hex strings first)."""
    cols = ", ".join(f"lower(hex({_ident(c)})) AS {_ident(c)}" if str(t) == "BLOB" else _ident(c)
                     for c, t in zip(rel.columns, rel.types))
    rows = rel.project(cols).project("CAST(to_json(struct_pack(*COLUMNS(*))) AS VARCHAR)")
    for chunk in _fetch(rows):
        yield from chunk


def _text_expr(col: str, kind: str) -> str:
    c = _ident(col)
    if kind == "UBIGINT":
        expr = f"printf('%#x', {c})"
    elif kind == "BLOB":
        expr = f"lower(hex({c}))"
    else:
        expr = f"CAST({c} AS VARCHAR)"
    return f"coalesce({expr}, '-')"


_NUMERIC = re.compile(r"^(TINYINT|SMALLINT|INTEGER|BIGINT|HUGEINT|U\w*INT|FLOAT|DOUBLE|"
                      r"DECIMAL.*)$")


def text_columns(rel) -> tuple[list[str], list[bool], Iterator[list[tuple]]]:
    """Column names, which are numbers (right-aligned), and the rows as strings, in
    chunks."""
    kinds = [str(t) for t in rel.types]
    cols = list(rel.columns)
    text = rel.project(", ".join(f"{_text_expr(c, k)} AS {_ident(c)}"
                                 for c, k in zip(cols, kinds)))
    numeric = [bool(_NUMERIC.match(k)) and k != "UBIGINT" for k in kinds]

    def chunks():
        import duckdb
        try:
            for rb in text.fetch_record_batch(1 << 16):
                yield list(zip(*(rb.column(i).to_pylist() for i in range(rb.num_columns))))
        except duckdb.Error as e:
            raise TextraceError(f"SQL: {str(e).splitlines()[0]}", field="QUERY") from None
    return cols, numeric, chunks()
