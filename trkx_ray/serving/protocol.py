"""The wire protocol of the tracking service: events in, ``hit_id, track_id`` out.

One HTTP ``POST /v1/track`` carries one event. The body is the event's hits table,
optionally followed by its cells table, in one of three formats, chosen by the
request's ``Content-Type`` (see ``docs/serving.md`` for the full specification):

* ``application/vnd.apache.arrow.stream``: an Arrow IPC stream of the hits; the
  cells, when sent, follow as a second, complete Arrow IPC stream in the same body
  (two streams back to back, each ended by its end-of-stream marker).
* ``application/vnd.apache.parquet``: a Parquet file of the hits; with cells, the
  body is the hits file followed by the cells file and the request header
  ``X-Trkx-Hits-Length`` gives the byte length of the hits file.
* ``application/json``: ``{"hits": {"hit_id": [...], "x": [...], ...},
  "cells": {...}}`` for small events.

Columns (TrackML names): hits ``hit_id`` (integer), ``x, y, z`` (float, mm) and,
when present, ``volume_id, layer_id, module_id`` (integer); cells ``hit_id, ch0,
ch1`` (integer) and ``value`` (float). Any integer type is converted to int32 (an
overflow is refused), any float to float32; other columns are ignored. Clients
should send the narrowest exact types (:data:`NARROW_DTYPES`, what
:func:`encode_event` sends): they are up to half the bytes.

The answer is the ``hit_id`` (int32) and ``track_id`` (int64, or int32 when the
request says ``X-Trkx-Track-Id-Type: int32``) columns in the request's format (``Accept`` may ask for another one), in the request's row order,
with per-stage seconds in headers such as ``X-Trkx-Stage-Embedding-S``.

Every problem with a request raises :class:`ProtocolError` carrying the HTTP status
and a message naming the problem (the column, the row, the limit). Events are
checked by :meth:`trkx_ray.events.Event.validate` (finite coordinates, unique
non-negative hit ids, cells of known hits), so the service refuses exactly what
the file readers refuse. Nothing here executes or unpickles anything from a request.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from trkx_ray.events.event import Event, EventFormatError, Table, locate_ids
from trkx_ray.events.schema import CELLS, HITS

__all__ = [
    "ANSWER_COLUMNS",
    "ARROW_FILE",
    "ARROW_STREAM",
    "CELLS_COLUMNS",
    "CONTENT_TYPES",
    "DEFAULT_MAX_REQUEST_BYTES",
    "EVENT_ID_HEADER",
    "HITS_COLUMNS",
    "HITS_LENGTH_HEADER",
    "JSON",
    "NARROW_DTYPES",
    "PARQUET",
    "ProtocolError",
    "TrackAnswer",
    "answer_format",
    "decode_answer",
    "decode_event",
    "encode_answer",
    "encode_event",
    "error_body",
    "parse_timing_headers",
    "request_format",
    "stage_header",
    "TRACK_ID_TYPE_HEADER",
    "TRACK_ID_TYPES",
    "answer_track_id_type",
    "narrow_columns",
    "timing_headers",
]

ARROW_STREAM = "application/vnd.apache.arrow.stream"
ARROW_FILE = "application/vnd.apache.arrow.file"
PARQUET = "application/vnd.apache.parquet"
JSON = "application/json"

#: short format name -> the media type the service answers with.
CONTENT_TYPES: dict[str, str] = {"arrow": ARROW_STREAM, "parquet": PARQUET, "json": JSON}

#: accepted media types (lower case, without parameters) -> format name.
_MEDIA: dict[str, str] = {
    ARROW_STREAM: "arrow",
    "application/x-apache-arrow-stream": "arrow",
    ARROW_FILE: "arrow-file",
    "application/x-apache-arrow-file": "arrow-file",
    PARQUET: "parquet",
    "application/x-parquet": "parquet",
    "application/parquet": "parquet",
    JSON: "json",
}

#: request header: the event number (optional, echoed in the answer).
EVENT_ID_HEADER = "X-Trkx-Event-Id"
#: request header: byte length of the hits part when cells follow it (required for
#: Parquet with cells, optional for Arrow streams, which delimit themselves).
HITS_LENGTH_HEADER = "X-Trkx-Hits-Length"

#: request header: the answer's ``track_id`` type, ``int64`` (default, the TrackML
#: submission type) or ``int32`` (labels are 0..T-1 with T <= hits: int32 is exact
#: for any event below 2**31 hits, and the answer is 8 instead of 12 bytes per hit).
TRACK_ID_TYPE_HEADER = "X-Trkx-Track-Id-Type"
TRACK_ID_TYPES = ("int64", "int32")

#: the narrowest types that hold a pile-up-200 TrackML event exactly, what the Python
#: client sends when the values fit (:func:`narrow_columns`; a wider type otherwise).
#: The service accepts any integer / float type and converts (``docs/serving.md``).
NARROW_DTYPES: dict[str, dict[str, np.dtype]] = {
    "hits": {"hit_id": np.dtype("int32"), "x": np.dtype("float32"),
             "y": np.dtype("float32"), "z": np.dtype("float32"),
             "volume_id": np.dtype("int8"), "layer_id": np.dtype("int8"),
             "module_id": np.dtype("int16")},
    "cells": {"hit_id": np.dtype("int32"), "ch0": np.dtype("int16"),
              "ch1": np.dtype("int16"), "value": np.dtype("float32")},
}

#: default request size limit, bytes (the service's ``--max-request-mb``).
DEFAULT_MAX_REQUEST_BYTES = 64 * 2**20

#: hits columns the service reads: required ones, then optional ones (TrackML dtypes).
HITS_REQUIRED = ("hit_id", "x", "y", "z")
HITS_OPTIONAL = ("volume_id", "layer_id", "module_id")
HITS_COLUMNS: dict[str, np.dtype] = {c: HITS[c] for c in HITS_REQUIRED + HITS_OPTIONAL}
#: cells columns (all required when cells are sent).
CELLS_COLUMNS: dict[str, np.dtype] = dict(CELLS)
#: answer columns and dtypes.
ANSWER_COLUMNS: dict[str, np.dtype] = {"hit_id": np.dtype("int32"), "track_id": np.dtype("int64")}

_ARROW_MAGIC = b"\xff\xff\xff\xff"
_ARROW_FILE_MAGIC = b"ARROW1"
_PARQUET_MAGIC = b"PAR1"


class ProtocolError(ValueError):
    """A request the service refuses: ``status`` is the HTTP status, the message says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = int(status)
        self.message = message


@dataclass
class TrackAnswer:
    """A decoded answer of the service.

    Attributes:
        hit_id: hit ids (int32), in the request's row order.
        track_id: track label of each hit (int64).
        timings: seconds per pipeline stage (``embedding``, ..., ``total``) and the
            replica's ``decode``, ``encode`` and ``service`` seconds, from the headers.
        event_id: the event number echoed by the service.
        headers: all response headers, names in lower case.
    """

    hit_id: np.ndarray
    track_id: np.ndarray
    timings: dict[str, float]
    event_id: int
    headers: dict[str, str]


# -- formats ------------------------------------------------------------------------
def _media_type(value: str | None) -> str:
    return (value or "").split(";", 1)[0].strip().lower()


def _sniff(body: Any) -> str | None:
    body = bytes(body[:6])
    if body[:4] == _PARQUET_MAGIC:
        return "parquet"
    if body[:6] == _ARROW_FILE_MAGIC:
        return "arrow-file"
    if body[:4] == _ARROW_MAGIC:
        return "arrow"
    if body[:1] in (b"{", b" ", b"\n", b"\t", b"\r"):
        return "json"
    return None


def request_format(content_type: str | None, body: Any = b"") -> str:
    """The format of a request body: ``arrow``, ``arrow-file``, ``parquet`` or ``json``.

    ``Content-Type`` decides; when it is absent or ``application/octet-stream`` the
    body's magic bytes do (``PAR1``: Parquet, ``ARROW1``: Arrow file, ``0xFFFFFFFF``:
    Arrow stream, ``{``: JSON).

    Raises:
        ProtocolError: 415 for any other media type or an unrecognisable body.
    """
    media = _media_type(content_type)
    if media in _MEDIA:
        return _MEDIA[media]
    if media in ("", "application/octet-stream"):
        fmt = _sniff(body)
        if fmt is not None:
            return fmt
        raise ProtocolError(
            415,
            "cannot tell the body's format: send Content-Type "
            f"{ARROW_STREAM}, {PARQUET} or {JSON}",
        )
    raise ProtocolError(
        415,
        f"unsupported Content-Type {media!r}: use {ARROW_STREAM}, {PARQUET} or {JSON}",
    )


def answer_format(request_fmt: str, accept: str | None = None) -> str:
    """The format of the answer: the request's, unless ``Accept`` names another one.

    ``Accept`` values the service does not produce (``*/*``, ``text/html``, lists)
    leave the request's format.
    """
    fmt = "arrow" if request_fmt == "arrow-file" else request_fmt
    for item in (accept or "").split(","):
        named = _MEDIA.get(_media_type(item))
        if named is not None:
            return "arrow" if named == "arrow-file" else named
    return fmt


# -- tables -> columns ----------------------------------------------------------------
def _address(owner: bytearray | None) -> int:
    """The address of ``owner``'s first byte (0: no owner, or an empty one)."""
    if owner is None or not len(owner):
        return 0
    import pyarrow as pa

    return int(pa.py_buffer(owner).address)


def _writable_view(column: Any, dtype: np.dtype, owner: bytearray | None,
                   base: int | None = None) -> np.ndarray | None:
    """A writable numpy view of ``column``'s values inside ``owner``, or None.

    Arrow IPC readers hand out read-only buffers that point into the request body.
    When the body is a ``bytearray`` (the service reads requests into one), a
    one-chunk column of the wanted type without nulls is viewed in place: no copy,
    and the pipeline gets ordinary writable arrays. ``base``: ``owner``'s address
    (:func:`_address`), when the caller has it already.
    """
    if owner is None or column.num_chunks != 1:
        return None
    chunk = column.chunk(0)
    buffers = chunk.buffers()
    if len(buffers) != 2 or buffers[1] is None:
        return None
    data = buffers[1]
    if base is None:
        base = _address(owner)
    start = data.address - base + chunk.offset * dtype.itemsize
    end = start + len(chunk) * dtype.itemsize
    if base == 0 or start < 0 or end > len(owner):
        return None
    return np.frombuffer(owner, dtype=dtype, count=len(chunk), offset=start)


#: numpy dtype -> Arrow type (``pa.from_numpy_dtype``, once per type).
_ARROW_TYPES: dict[np.dtype, Any] = {}


def _arrow_type(dtype: np.dtype) -> Any:
    want = _ARROW_TYPES.get(dtype)
    if want is None:
        import pyarrow as pa

        want = _ARROW_TYPES[dtype] = pa.from_numpy_dtype(dtype)
    return want


def _columns_from_arrow(
    table: Any,
    part: str,
    schema: Mapping[str, np.dtype],
    required: tuple[str, ...],
    owner: bytearray | None = None,
) -> Table:
    """Check and convert an Arrow table's columns of ``part`` to numpy (TrackML dtypes).

    Columns already of the wanted type are viewed in place inside ``owner`` (the
    request body as a ``bytearray``) when they lie there; others are converted.

    Raises:
        ProtocolError: 422 naming the missing / mistyped / null / overflowing column.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    names = list(table.column_names)
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ProtocolError(422, f"{part}: column(s) {dup} appear more than once")
    missing = [c for c in required if c not in names]
    if missing:
        raise ProtocolError(
            422, f"{part}: missing required column(s) {missing} (the body has {names})"
        )
    out: Table = {}
    base = _address(owner)
    for name, dtype in schema.items():
        if name not in names:
            continue
        column = table.column(name)
        have = column.type
        want = _arrow_type(dtype)
        if have == want and not column.null_count:
            # the common case (the client's types): viewed in place, or one copy below
            view = _writable_view(column, dtype, owner, base)
            if view is not None:
                out[name] = view
                continue
        if pa.types.is_dictionary(have):
            column = column.cast(have.value_type)
            have = column.type
        if not (pa.types.is_integer(have) or pa.types.is_floating(have)):
            kind = "an integer" if dtype.kind == "i" else "a floating-point"
            raise ProtocolError(
                422, f"{part}: column {name!r} has type {have}, expected {kind} type ({dtype})"
            )
        if dtype.kind == "i" and pa.types.is_floating(have):
            raise ProtocolError(
                422, f"{part}: column {name!r} has type {have}, expected an integer type ({dtype})"
            )
        if column.null_count:
            row = pc.index(pc.is_null(column), True).as_py()
            raise ProtocolError(422, f"{part}: column {name!r} has a null value at row {row}")
        if dtype.kind == "i" and pa.types.is_integer(have) and have.bit_width < want.bit_width:
            # a narrower integer column (int8, int16, uint16, ...): widening is exact
            # (the widths double), one numpy conversion instead of a cast and a copy
            out[name] = np.asarray(column.to_numpy()).astype(dtype)
            continue
        if have != want:
            try:
                column = column.cast(want, safe=dtype.kind == "i")
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise ProtocolError(
                    422, f"{part}: column {name!r} of type {have} does not fit {want} ({exc})"
                ) from exc
        arr = column.to_numpy()
        if not arr.flags.writeable:
            arr = arr.copy()
        out[name] = arr
    return out


def _read_arrow_stream(reader: Any, part: str) -> Any:
    import pyarrow as pa

    try:
        return pa.ipc.open_stream(reader).read_all()
    except (pa.ArrowInvalid, OSError, ValueError) as exc:
        raise ProtocolError(400, f"{part}: body is not a valid Arrow IPC stream ({exc})") from exc


def _read_table(data: Any, fmt: str, part: str) -> Any:
    import pyarrow as pa

    if len(data) == 0:
        raise ProtocolError(400, f"{part}: empty body part")
    if fmt == "arrow":
        return _read_arrow_stream(pa.BufferReader(data), part)
    if fmt == "arrow-file":
        try:
            return pa.ipc.open_file(pa.BufferReader(data)).read_all()
        except (pa.ArrowInvalid, OSError, ValueError) as exc:
            raise ProtocolError(
                400, f"{part}: body is not a valid Arrow IPC file ({exc})"
            ) from exc
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(pa.BufferReader(data)).read(use_threads=False)
    except (pa.ArrowInvalid, OSError, ValueError) as exc:
        raise ProtocolError(400, f"{part}: body is not a valid Parquet file ({exc})") from exc


def _json_tables(body: Any) -> tuple[Any, Any]:
    import pyarrow as pa

    try:
        doc = json.loads(bytes(body))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(400, f"body is not valid JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise ProtocolError(400, 'JSON body must be an object {"hits": {...}, "cells": {...}}')
    if "hits" not in doc:
        raise ProtocolError(422, 'JSON body has no "hits" object')
    tables: list[pa.Table | None] = []
    for part in ("hits", "cells"):
        cols = doc.get(part)
        if cols is None:
            tables.append(None)
            continue
        if not isinstance(cols, dict):
            raise ProtocolError(422, f'JSON "{part}" must be an object of column arrays')
        arrays = {}
        for name, values in cols.items():
            if not isinstance(values, list):
                raise ProtocolError(422, f"{part}: column {name!r} must be a JSON array")
            try:
                arrays[name] = pa.array(values)
            except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError) as exc:
                raise ProtocolError(
                    422, f"{part}: column {name!r} is not an array of numbers ({exc})"
                ) from exc
        lengths = {name: len(a) for name, a in arrays.items()}
        if len(set(lengths.values())) > 1:
            raise ProtocolError(422, f"{part}: columns have different lengths {lengths}")
        tables.append(pa.table(arrays) if arrays else pa.table({}))
    return tables[0], tables[1]


def _split_parts(body: bytes, fmt: str, headers: Mapping[str, str]) -> tuple[Any, Any]:
    """The hits and (optional) cells Arrow tables of a binary body."""
    import pyarrow as pa

    length = _header(headers, HITS_LENGTH_HEADER)
    if length is not None:
        try:
            n = int(length)
        except ValueError:
            n = -1
        if not 0 < n <= len(body):
            raise ProtocolError(
                400,
                f"{HITS_LENGTH_HEADER} {length!r} must be an integer in [1, {len(body)}] "
                "(the byte length of the hits part of the body)",
            )
        whole = pa.py_buffer(body)  # zero-copy slices (a bytes slice would copy)
        hits = _read_table(whole.slice(0, n), fmt, "hits")
        cells = _read_table(whole.slice(n), fmt, "cells") if n < len(body) else None
        return hits, cells
    if fmt == "arrow":
        reader = pa.BufferReader(pa.py_buffer(body))
        hits = _read_arrow_stream(reader, "hits")
        rest = len(body) - reader.tell()
        cells = _read_arrow_stream(reader, "cells") if rest > 0 else None
        if cells is not None and reader.tell() < len(body):
            raise ProtocolError(
                400,
                f"body has {len(body) - reader.tell()} byte(s) after the hits and cells "
                "Arrow streams",
            )
        return hits, cells
    return _read_table(body, fmt, "hits"), None


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        value = headers.get(name.lower())
    return value


def _event_id(headers: Mapping[str, str]) -> int:
    raw = _header(headers, EVENT_ID_HEADER)
    if raw is None or raw == "":
        return 0
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if not 0 <= value < 2**63:
        raise ProtocolError(400, f"{EVENT_ID_HEADER} {raw!r} must be a non-negative integer")
    return value


def decode_event(
    body: Any,
    content_type: str | None,
    headers: Mapping[str, str] | None = None,
    *,
    max_bytes: int | None = DEFAULT_MAX_REQUEST_BYTES,
) -> tuple[Event, str]:
    """Decode and validate one request body.

    Args:
        body: the request body: bytes or any buffer (a numpy ``uint8`` array from
            Ray's object store is read without a copy). From a ``bytearray``, Arrow
            columns already of the service's types become writable numpy views into
            it (no copy at all); the event then shares the bytearray's memory.
        content_type: its ``Content-Type``.
        headers: request headers (``X-Trkx-Event-Id``, ``X-Trkx-Hits-Length``).
        max_bytes: refuse bodies above this size (None: no limit).

    Returns:
        ``(event, fmt)``: the event (hits, cells when sent; ``source`` names the
        request) and the request's format name.

    Raises:
        ProtocolError: 400 malformed body / header, 413 too large, 415 unknown
            format, 422 missing or mistyped column, null, NaN, duplicate hit id,
            cells of unknown hits.
    """
    headers = headers or {}
    if not isinstance(body, (bytes, bytearray, memoryview)):
        body = memoryview(body).cast("B")
    if max_bytes is not None and len(body) > max_bytes:
        raise ProtocolError(413, _too_large(len(body), max_bytes))
    if len(body) == 0:
        raise ProtocolError(400, "empty body: send one event's hits")
    fmt = request_format(content_type, body)
    event_id = _event_id(headers)
    if fmt == "json":
        hits_table, cells_table = _json_tables(body)
    else:
        hits_table, cells_table = _split_parts(body, fmt, headers)
    owner = body if isinstance(body, bytearray) and fmt in ("arrow", "arrow-file") else None
    hits = _columns_from_arrow(hits_table, "hits", HITS_COLUMNS, HITS_REQUIRED, owner)
    cells = None
    if cells_table is not None:
        cells = _columns_from_arrow(cells_table, "cells", CELLS_COLUMNS, tuple(CELLS_COLUMNS),
                                    owner)
    source = f"request (event {event_id})"
    # Event.validate wants every TrackML hits column; the pipeline does not use the
    # module ids, so absent ones are stood in by zero-copy zeros for the check only.
    n = len(hits["hit_id"])
    filled = dict(hits)
    for name in HITS_OPTIONAL:
        if name not in filled:
            filled[name] = np.broadcast_to(np.zeros(1, dtype=HITS_COLUMNS[name]), (n,))
    try:
        Event(event_id=event_id, hits=filled, cells=None, source=source).validate()
        if cells is not None:
            _check_cells(hits["hit_id"], cells, source)
    except EventFormatError as exc:
        raise ProtocolError(422, str(exc)) from exc
    return Event(event_id=event_id, hits=hits, cells=cells, source=source), fmt


def _check_cells(hit_id: np.ndarray, cells: Table, source: str) -> None:
    """The checks :meth:`Event.validate` makes of cells (same messages), with a fast path.

    Hit ids are usually contiguous (TrackML numbers hits 1..N): then "every cell is of
    a known hit" is a range check, ~50x faster than the general sorted look-up
    (:func:`~trkx_ray.events.event.locate_ids`) on a pile-up-200 event's 330k cells.

    Raises:
        EventFormatError: a non-finite ``value`` or a cell of an unknown hit.
    """
    where = f"{source}: cells"
    ids = cells["hit_id"]
    for col, want in CELLS_COLUMNS.items():
        if want.kind != "f":
            continue
        bad = ~np.isfinite(cells[col])
        if bad.any():
            i = int(np.argmax(bad))
            raise EventFormatError(f"{where}: column {col!r} has a non-finite value "
                                   f"({cells[col][i]}) at row {i} (hit_id {int(ids[i])})")
    if not len(ids):
        return
    n = len(hit_id)
    if n and int(hit_id[-1]) - int(hit_id[0]) == n - 1 and bool((np.diff(hit_id) == 1).all()):
        found = (ids >= hit_id[0]) & (ids <= hit_id[-1])
    else:
        _, found = locate_ids(hit_id, ids)
    if not found.all():
        i = int(np.argmax(~found))
        raise EventFormatError(f"{where}: row {i} is for unknown hit_id {int(ids[i])}")


def _too_large(size: int, limit: int) -> str:
    return (
        f"request body of {size / 2**20:.1f} MiB exceeds the service's limit of "
        f"{limit / 2**20:.1f} MiB (--max-request-mb)"
    )


# -- encoding ---------------------------------------------------------------------------
def _write_arrow_stream(sink: Any, columns: Mapping[str, np.ndarray]) -> None:
    """Append one complete Arrow IPC stream (schema, one batch, end marker) to ``sink``."""
    import pyarrow as pa

    batch = pa.record_batch([pa.array(v) for v in columns.values()], names=list(columns))
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)


def _arrow_streams(*parts: Mapping[str, np.ndarray]) -> tuple[bytes, list[int]]:
    """Arrow IPC streams of ``parts`` back to back in one buffer, and each one's end offset."""
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    ends = []
    for columns in parts:
        _write_arrow_stream(sink, columns)
        ends.append(int(sink.tell()))
    return sink.getvalue().to_pybytes(), ends


def _arrow_stream(columns: Mapping[str, np.ndarray]) -> bytes:
    """One Arrow IPC stream of ``columns``."""
    return _arrow_streams(columns)[0]


def _parquet(columns: Mapping[str, np.ndarray], compression: str | None) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({k: pa.array(v) for k, v in columns.items()})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression=compression or "none", use_dictionary=False)
    return sink.getvalue().to_pybytes()


def _json_list(arr: np.ndarray) -> list[Any]:
    return np.asarray(arr).tolist()


_INT_TYPES = tuple(np.dtype(t) for t in ("int8", "int16", "int32", "int64"))


def _narrowest(arr: np.ndarray, floor: np.dtype | None = None) -> np.ndarray:
    """``arr`` in the narrowest type that holds its values exactly.

    Integers: the smallest of int8/int16/int32/int64 holding ``[min, max]`` (never
    narrower than ``floor``); floats: float32 (the service computes in float32,
    ``docs/serving.md``), unless already narrower. Returns ``arr`` itself (no copy)
    when it is already of that type.
    """
    if arr.dtype.kind == "f":
        return arr if arr.dtype.itemsize <= 4 else arr.astype(np.float32)
    if arr.dtype.kind not in "iu" or arr.size == 0:
        return arr
    lo, hi = int(arr.min()), int(arr.max())
    for t in _INT_TYPES:
        if floor is not None and t.itemsize < floor.itemsize:
            continue
        info = np.iinfo(t)
        if info.min <= lo and hi <= info.max:
            return arr if arr.dtype == t else arr.astype(t)
    return arr


def narrow_columns(columns: Mapping[str, Any], part: str) -> dict[str, np.ndarray]:
    """The columns of ``part`` (``hits`` / ``cells``) in the narrowest exact types.

    ``hit_id`` stays at least int32 (ids of large events need it, and a C++ client
    can then read the answer's ids with the request's type); other integer columns
    take the smallest of int8/int16/int32/int64 that holds their values (the TrackML
    ``volume_id``, ``layer_id`` fit int8, ``module_id``, ``ch0``, ``ch1`` int16:
    :data:`NARROW_DTYPES`), floats float32. Every value is kept exactly as the
    service would read it (the service widens integers to int32 and reads floats as
    float32 whatever is sent).
    """
    floor = np.dtype("int32")
    return {name: _narrowest(np.asarray(arr), floor if name == "hit_id" else None)
            for name, arr in columns.items()}


def encode_event(
    event: Event,
    fmt: str = "arrow",
    *,
    cells: bool = True,
    compression: str | None = None,
    narrow: bool = True,
    track_id_type: str | None = "int32",
) -> tuple[bytes, dict[str, str]]:
    """Encode an event as a request body.

    Args:
        event: the event (its hits, and cells when present and ``cells``).
        fmt: ``arrow``, ``parquet`` or ``json``.
        cells: send the cells (the default pipeline's cell features use them).
        compression: Parquet codec (``snappy``, ``zstd``, ...; None: uncompressed).
        narrow: send every column in the narrowest type that holds its values
            exactly (:func:`narrow_columns`: a pile-up-200 event with cells is 6.1
            instead of 8.3 MB as an Arrow stream); False: the event's own types.
        track_id_type: ask for the answer's ``track_id`` in this type
            (``X-Trkx-Track-Id-Type``: ``int32`` halves its bytes and is exact for
            events below 2**31 hits; ``int64`` or None: the service's default, int64).

    Returns:
        ``(body, headers)`` with ``Content-Type``, ``X-Trkx-Event-Id`` and, for a
        body with cells, ``X-Trkx-Hits-Length``.
    """
    if fmt not in CONTENT_TYPES:
        raise ValueError(f"format must be one of {sorted(CONTENT_TYPES)}, got {fmt!r}")
    if track_id_type is not None and track_id_type not in TRACK_ID_TYPES:
        raise ValueError(f"track_id_type must be one of {TRACK_ID_TYPES} or None, "
                         f"got {track_id_type!r}")
    hits = {c: np.asarray(event.hits[c]) for c in HITS_COLUMNS if c in event.hits}
    cell_cols = None
    if cells and event.cells is not None:
        cell_cols = {c: np.asarray(event.cells[c]) for c in CELLS_COLUMNS if c in event.cells}
    if narrow and fmt != "json":
        hits = narrow_columns(hits, "hits")
        if cell_cols is not None:
            cell_cols = narrow_columns(cell_cols, "cells")
    headers = {"Content-Type": CONTENT_TYPES[fmt], EVENT_ID_HEADER: str(int(event.event_id))}
    if track_id_type is not None and track_id_type != "int64":
        headers[TRACK_ID_TYPE_HEADER] = track_id_type
    if fmt == "json":
        doc: dict[str, Any] = {"hits": {c: _json_list(a) for c, a in hits.items()}}
        if cell_cols is not None:
            doc["cells"] = {c: _json_list(a) for c, a in cell_cols.items()}
        return json.dumps(doc, separators=(",", ":")).encode(), headers
    if fmt == "arrow":
        if cell_cols is None:
            return _arrow_stream(hits), headers
        body, ends = _arrow_streams(hits, cell_cols)  # one buffer, no concatenation
        headers[HITS_LENGTH_HEADER] = str(ends[0])
        return body, headers
    body = _parquet(hits, compression)
    if cell_cols is not None:
        headers[HITS_LENGTH_HEADER] = str(len(body))
        body += _parquet(cell_cols, compression)
    return body, headers


def answer_track_id_type(headers: Mapping[str, str]) -> np.dtype:
    """The answer's ``track_id`` type asked for by ``X-Trkx-Track-Id-Type`` (int64 default).

    Raises:
        ProtocolError: 400 for another value than ``int64`` / ``int32``.
    """
    raw = _header(headers, TRACK_ID_TYPE_HEADER)
    if raw is None or raw.strip() == "":
        return ANSWER_COLUMNS["track_id"]
    value = raw.strip().lower()
    if value not in TRACK_ID_TYPES:
        raise ProtocolError(400, f"{TRACK_ID_TYPE_HEADER} {raw!r} must be one of "
                                 f"{', '.join(TRACK_ID_TYPES)}")
    return np.dtype(value)


def encode_answer(hit_id: np.ndarray, track_id: np.ndarray, fmt: str, event_id: int = 0,
                  track_id_type: np.dtype | str = "int64") -> bytes:
    """Encode the answer columns ``hit_id`` (int32), ``track_id`` in ``fmt``.

    ``track_id_type`` is ``int64`` (default) or ``int32``; labels that do not fit
    int32 (never for events below 2**31 hits) are sent as int64.
    """
    want = np.dtype(track_id_type)
    labels = np.asarray(track_id)
    if want != np.dtype("int64") and labels.size:
        info = np.iinfo(want)
        if int(labels.min()) < info.min or int(labels.max()) > info.max:
            want = np.dtype("int64")
    columns = {
        "hit_id": np.asarray(hit_id, dtype=ANSWER_COLUMNS["hit_id"]),
        "track_id": labels.astype(want, copy=False),
    }
    if fmt == "json":
        doc = {"event_id": int(event_id), **{k: _json_list(v) for k, v in columns.items()}}
        return json.dumps(doc, separators=(",", ":")).encode()
    if fmt == "arrow":
        return _arrow_stream(columns)
    if fmt == "parquet":
        return _parquet(columns, None)
    raise ValueError(f"format must be one of {sorted(CONTENT_TYPES)}, got {fmt!r}")


def decode_answer(body: bytes, content_type: str | None) -> tuple[np.ndarray, np.ndarray]:
    """Decode an answer body into ``(hit_id int32, track_id int64)``.

    Raises:
        ProtocolError: 502-style problems of the answer (status 0: client side).
    """
    fmt = request_format(content_type, body)
    if fmt == "json":
        try:
            doc = json.loads(body)
            hit_id = np.asarray(doc["hit_id"], dtype=np.int32)
            track_id = np.asarray(doc["track_id"], dtype=np.int64)
        except (ValueError, KeyError, TypeError) as exc:
            raise ProtocolError(0, f"malformed JSON answer ({exc})") from exc
        return hit_id, track_id
    table = _read_table(body, fmt, "answer")
    cols = _columns_from_arrow(table, "answer", ANSWER_COLUMNS, tuple(ANSWER_COLUMNS))
    return cols["hit_id"], cols["track_id"]


# -- headers ------------------------------------------------------------------------------
def stage_header(stage: str) -> str:
    """``"build_edges"`` -> ``"X-Trkx-Stage-Build-Edges-S"``."""
    return "X-Trkx-Stage-" + "-".join(p.capitalize() for p in stage.split("_")) + "-S"


def timing_headers(timings: Mapping[str, float]) -> dict[str, str]:
    """Per-stage seconds as ``X-Trkx-Stage-<Stage>-S`` headers (microsecond resolution)."""
    out = {}
    for stage, seconds in timings.items():
        value = float(seconds)
        if math.isfinite(value):
            out[stage_header(stage)] = f"{value:.6f}"
    return out


def parse_timing_headers(headers: Mapping[str, str]) -> dict[str, float]:
    """Invert :func:`timing_headers` (also reads ``X-Trkx-{Decode,Encode,Service}-S``)."""
    out: dict[str, float] = {}
    for key, value in headers.items():
        low = key.lower()
        if not (low.startswith("x-trkx-") and low.endswith("-s")):
            continue
        name = low[len("x-trkx-"):-2]
        if name.startswith("stage-"):
            name = name[len("stage-"):]
        try:
            out[name.replace("-", "_")] = float(value)
        except ValueError:
            continue
    return out


def error_body(status: int, message: str) -> bytes:
    """The JSON body of an error answer: ``{"error": message, "status": status}``."""
    return json.dumps({"error": message, "status": int(status)}).encode()
