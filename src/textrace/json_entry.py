"""One JSON object checked key by key, as every JSON entry of textrace's own section is
read (entries.py, capture.parse_outcome): anything a damaged file can get wrong becomes a
FormatError naming the entry, never a KeyError or TypeError later.
"""

from __future__ import annotations

import json
from typing import Any

from .errors import FormatError


def parse_json(raw: bytes, keys: dict[str, Any], *, file=None, offset: int = 0,
               entry: str = "entry", required: bool = True) -> dict:
    """One JSON object with `keys` of those types (all of them when `required`)."""
    def bad(msg):
        return FormatError(msg, file=file, offset=offset, field=f"textrace.{entry}")
    try:
        d = json.loads(bytes(raw).decode("utf-8"))
    except UnicodeDecodeError as e:
        raise bad(f"not UTF-8 ({e.reason} at byte {e.start})") from None
    except (json.JSONDecodeError, RecursionError) as e:
        raise bad(f"not JSON ({getattr(e, 'msg', e)})") from None
    if not isinstance(d, dict):
        raise bad(f"a JSON {type(d).__name__}, not an object")
    for k, types in keys.items():
        if k not in d:
            if required:
                raise bad(f"no {k!r}")
            continue
        v = d[k]
        allowed = types if isinstance(types, tuple) else (types,)
        if not isinstance(v, allowed) or (isinstance(v, bool) and bool not in allowed):
            raise bad(f"{k!r} is {type(v).__name__} {str(v)[:40]!r}")
    return d
