"""TrackML event files: read, write, list and convert events; submission files.

File layout follows the TrackML challenge (and its ``trackml-library``): an event
is a *prefix* such as ``dir/event000000001`` and one file per part,
``{prefix}-{part}.csv`` or ``.csv.gz`` with a header row, for the parts
``hits``, ``cells``, ``particles`` and ``truth``. We add a Parquet cache,
``{prefix}-{part}.parquet``, which readers prefer when present (milliseconds to
load instead of a CSV parse). We write Parquet pages with CRC-32 checksums and
verify them on reading, so a damaged cache file fails loudly instead of loading
altered values (files without checksums still load).

All parsing is done by pyarrow (``pyarrow.csv`` with explicit column types,
gzip through pyarrow input streams, ``pyarrow.parquet``): no Python loop over
rows. Every problem with a file (missing, empty, corrupt gzip, missing or
mistyped column, empty value, non-finite coordinate, duplicate / negative /
unknown hit id) raises :class:`~trkx_ray.events.event.EventFormatError` naming
the file and the column and/or line.

Units: positions in mm, momenta in GeV (see :mod:`trkx_ray.events.schema`).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from trkx_ray.events.event import Event, EventFormatError, Table, locate_ids
from trkx_ray.events.schema import OPTIONAL_COLUMNS, PARTS, SCHEMAS, SUBMISSION

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa

__all__ = [
    "GZIP_LEVEL",
    "SUFFIXES",
    "convert_events",
    "event_id_from_prefix",
    "find_part_file",
    "iter_events",
    "list_events",
    "load_event",
    "present_parts",
    "read_part",
    "read_submission",
    "write_event",
    "write_submission",
]

logger = logging.getLogger(__name__)

#: gzip level of written ``.csv.gz`` files (6: gzip's default; pyarrow's own is 9,
#: about 1.5x slower for the same size on TrackML CSV).
GZIP_LEVEL = 6

#: file suffixes of an event part, in the order readers look for them.
SUFFIXES: tuple[str, ...] = (".parquet", ".csv", ".csv.gz")

_PREFIX_ID = re.compile(r"(\d+)$")
_HITS_FILE = re.compile(r"^(event(\d+))-hits(\.parquet|\.csv|\.csv\.gz)$")
#: how much of a file's start is read to find its header row (bytes).
_HEADER_PROBE = 1 << 16
_HEADER_MAX = 1 << 20

PathLike = str | os.PathLike[str]


# -- names ----------------------------------------------------------------------
def event_id_from_prefix(prefix: PathLike) -> int:
    """Parse the event id from a prefix's file name (``.../event000000001`` -> 1).

    Raises:
        EventFormatError: the name does not end in digits.
    """
    name = Path(prefix).name
    match = _PREFIX_ID.search(name)
    if match is None:
        hint = ""
        if re.search(r"-(hits|cells|particles|truth)(\.csv|\.csv\.gz|\.parquet)$", name):
            hint = " (give the prefix without the '-part.csv' ending)"
        raise EventFormatError(
            f"{os.fspath(prefix)}: not a TrackML event prefix like 'dir/event000001000'{hint}"
        )
    return int(match.group(1))


def find_part_file(prefix: PathLike, part: str) -> Path | None:
    """Return the file holding ``part`` of the event at ``prefix``, or ``None``.

    Looks for ``{prefix}-{part}.parquet``, then ``.csv``, then ``.csv.gz``.
    """
    base = os.fspath(prefix)
    for suffix in SUFFIXES:
        path = Path(f"{base}-{part}{suffix}")
        if path.is_file():
            return path
    return None


def present_parts(prefix: PathLike) -> tuple[str, ...]:
    """The parts of the event at ``prefix`` that have a file, in :data:`PARTS` order."""
    return tuple(p for p in PARTS if find_part_file(prefix, p) is not None)


def _part_name(part: str) -> str:
    if part not in PARTS:
        raise EventFormatError(f"unknown event part {part!r}; expected one of {PARTS}")
    return part


# -- reading tables ---------------------------------------------------------------
def _read_header(path: Path, compressed: bool) -> list[str]:
    """Read the header row's column names (decompressing only the file's start)."""
    import pyarrow as pa

    chunk = b""
    with pa.input_stream(str(path), compression="gzip" if compressed else None) as stream:
        while b"\n" not in chunk and len(chunk) < _HEADER_MAX:
            more = stream.read(_HEADER_PROBE)
            if not more:
                break
            chunk += more
    if not chunk.strip():
        raise EventFormatError(f"{path}: file is empty (no header row)")
    line = chunk.split(b"\n", 1)[0].rstrip(b"\r")
    try:
        text = line.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise EventFormatError(f"{path}: header row is not UTF-8 text ({exc})") from exc
    return [name.strip('"') for name in text.split(",")]


def _select_columns(
    path: Path,
    names: list[str],
    schema: Mapping[str, np.dtype],
    optional: Mapping[str, np.dtype],
) -> dict[str, np.dtype]:
    """Columns of ``names`` to read, with their dtypes; check the required ones."""
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise EventFormatError(f"{path}: column {name!r} appears twice in the header")
        seen.add(name)
    missing = [c for c in schema if c not in seen]
    unknown = [c for c in names if c not in schema and c not in optional]
    if missing:
        extra = f"; unexpected column(s) {unknown}" if unknown else ""
        raise EventFormatError(
            f"{path}: missing required column(s) {missing} (header has {names}{extra})"
        )
    if unknown:
        logger.warning("%s: ignoring unknown column(s) %s", path, unknown)
    keep = {c: schema[c] for c in schema}
    keep.update({c: optional[c] for c in names if c in optional})
    return keep


def _first_uncastable(column: Any, want: pa.DataType) -> int:
    """Row of the first value of a (non-empty) string ``column`` that does not cast to
    ``want``: a bisection with pyarrow's own casts (O(n) work in all)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    lo, hi = 0, len(column)  # the first bad row is in [lo, hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        try:
            pc.cast(column.slice(lo, mid - lo), want)
            lo = mid
        except pa.ArrowInvalid:
            hi = mid
    return lo


def _diagnose_csv(path: Path, compressed: bool, keep: Mapping[str, np.dtype]) -> str | None:
    """Why a typed read of a CSV file failed: the first row with the wrong number of
    fields, else the first value of a column that does not parse as its type.

    The file is read again with every kept column as text; rows with a wrong field
    count come to a handler (their line numbers), and each column is cast to its
    type on the parsed table. Error path only. None: no such problem found.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pcsv

    bad_rows: list[Any] = []

    def on_invalid_row(row: Any) -> str:  # pyarrow.csv.InvalidRow
        bad_rows.append(row)
        return "skip"

    try:
        with pa.input_stream(str(path), compression="gzip" if compressed else None) as stream:
            data = stream.read()
    except (OSError, ValueError, pa.ArrowException):
        return None
    try:
        data.decode("utf-8")  # the invalid-row handler gets rows as text
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        return f"{path}: line {line} is not UTF-8 text"
    try:
        table = pcsv.read_csv(
            pa.BufferReader(data),
            read_options=pcsv.ReadOptions(use_threads=False),
            parse_options=pcsv.ParseOptions(invalid_row_handler=on_invalid_row),
            convert_options=pcsv.ConvertOptions(
                column_types={c: pa.string() for c in keep},
                include_columns=list(keep),
                null_values=[""],
                strings_can_be_null=True,
            ),
        )
    except (OSError, ValueError, pa.ArrowException):
        return None
    if bad_rows:
        row = bad_rows[0]
        return (
            f"{path}: line {row.number} has the wrong number of fields "
            f"(expected {row.expected_columns}): {row.actual_columns} in {row.text[:120]!r}"
        )
    for name, dtype in keep.items():
        column = table.column(name)
        want = pa.from_numpy_dtype(dtype)
        try:
            pc.cast(column, want)
        except pa.ArrowInvalid:
            i = _first_uncastable(column, want)
            value = column[i].as_py()
            # rows before i all had the right field count: file line = row + 2 (header)
            return f"{path}: column {name!r} at line {i + 2}: invalid value {value!r} for {want}"
    return None


def _to_numpy(column: Any, dtype: np.dtype) -> np.ndarray:
    """A pyarrow (chunked) array as a writable numpy array of ``dtype``."""
    arr = column.to_numpy()
    if arr.dtype != dtype:
        arr = arr.astype(dtype)
    if not arr.flags.writeable:
        arr = arr.copy()
    return arr


def _table_to_columns(path: Path, table: pa.Table, keep: Mapping[str, np.dtype]) -> Table:
    """Check for empty values and convert to numpy columns in schema order."""
    import pyarrow.compute as pc

    out: Table = {}
    for name, dtype in keep.items():
        column = table.column(name)
        if column.null_count:
            row = pc.index(pc.is_null(column), True).as_py()
            raise EventFormatError(f"{path}: column {name!r} has an empty value at line {row + 2}")
        out[name] = _to_numpy(column, dtype)
    return out


def _read_csv(
    path: Path,
    schema: Mapping[str, np.dtype],
    optional: Mapping[str, np.dtype],
    use_threads: bool,
) -> Table:
    import pyarrow as pa
    import pyarrow.csv as pcsv

    compressed = path.name.endswith(".gz")
    try:
        if path.stat().st_size == 0:
            raise EventFormatError(f"{path}: file is empty (0 bytes)")
        names = _read_header(path, compressed)
        keep = _select_columns(path, names, schema, optional)
        convert = pcsv.ConvertOptions(
            column_types={c: pa.from_numpy_dtype(d) for c, d in keep.items()},
            include_columns=list(keep),
            null_values=[""],
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        )
        try:
            with pa.input_stream(str(path), compression="gzip" if compressed else None) as stream:
                table = pcsv.read_csv(
                    stream,
                    read_options=pcsv.ReadOptions(use_threads=use_threads),
                    convert_options=convert,
                )
        except pa.ArrowInvalid as exc:
            why = _diagnose_csv(path, compressed, keep)
            if why is None:
                raise
            raise EventFormatError(why) from exc
        return _table_to_columns(path, table, keep)
    except EventFormatError:
        raise
    except (OSError, ValueError, pa.ArrowException) as exc:
        kind = "corrupt or truncated gzip data" if compressed else "cannot read"
        raise EventFormatError(f"{path}: {kind} ({exc})") from exc


def _read_parquet(
    path: Path,
    schema: Mapping[str, np.dtype],
    optional: Mapping[str, np.dtype],
    use_threads: bool,
) -> Table:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        if path.stat().st_size == 0:
            raise EventFormatError(f"{path}: file is empty (0 bytes)")
        pfile = pq.ParquetFile(str(path), page_checksum_verification=True)
        names = list(pfile.schema_arrow.names)
        keep = _select_columns(path, names, schema, optional)
        table = pfile.read(columns=list(keep), use_threads=use_threads)
        for name, dtype in keep.items():
            want = pa.from_numpy_dtype(dtype)
            have = table.schema.field(name).type
            if have == want:
                continue
            if not (pa.types.is_integer(have) or pa.types.is_floating(have)):
                raise EventFormatError(f"{path}: column {name!r} has type {have}, expected {want}")
            try:
                cast = table.column(name).cast(want, safe=True)
            except pa.ArrowInvalid as exc:
                raise EventFormatError(
                    f"{path}: column {name!r} of type {have} does not fit {want} ({exc})"
                ) from exc
            table = table.set_column(table.schema.get_field_index(name), name, cast)
        return _table_to_columns(path, table, keep)
    except EventFormatError:
        raise
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise EventFormatError(f"{path}: cannot read Parquet file ({exc})") from exc


def read_part(path: PathLike, part: str, *, use_threads: bool = True) -> Table:
    """Read one event part file (``.csv``, ``.csv.gz`` or ``.parquet``).

    Columns are those of :data:`trkx_ray.events.schema.SCHEMAS` (plus the
    part's optional columns when present) with their TrackML dtypes; unknown
    extra columns are dropped with a logged warning. Rows keep the file's order.

    Args:
        path: the file.
        part: ``hits``, ``cells``, ``particles`` or ``truth``.
        use_threads: let pyarrow parse with its thread pool.

    Raises:
        EventFormatError: any problem with the file, naming it.
    """
    part = _part_name(part)
    path = Path(path)
    if not path.is_file():
        raise EventFormatError(f"{path}: no such file")
    schema, optional = SCHEMAS[part], OPTIONAL_COLUMNS[part]
    if path.name.endswith(".parquet"):
        return _read_parquet(path, schema, optional, use_threads)
    return _read_csv(path, schema, optional, use_threads)


# -- events ---------------------------------------------------------------------------
def _align_truth(hit_id: np.ndarray, truth: Table, where: str) -> Table:
    """Re-order truth rows to the hits' order; exactly one row per hit."""
    tid = truth["hit_id"]
    if len(tid) == len(hit_id) and np.array_equal(tid, hit_id):
        return truth
    index, found = locate_ids(hit_id, tid)
    if not found.all():
        i = int(np.argmax(~found))
        raise EventFormatError(
            f"{where}: line {i + 2} is for hit_id {int(tid[i])}, which is not in the hits"
        )
    counts = np.bincount(index, minlength=len(hit_id))
    if (counts > 1).any():
        h = int(np.argmax(counts > 1))
        raise EventFormatError(f"{where}: has {int(counts[h])} rows for hit_id {int(hit_id[h])}")
    if (counts == 0).any():
        h = int(np.argmax(counts == 0))
        raise EventFormatError(
            f"{where}: has no row for {int((counts == 0).sum())} hit(s), the first being "
            f"hit_id {int(hit_id[h])} (expected exactly one row per hit)"
        )
    perm = np.empty(len(hit_id), dtype=np.int64)
    perm[index] = np.arange(len(tid), dtype=np.int64)
    return {name: arr[perm] for name, arr in truth.items()}


def load_event(
    prefix: PathLike,
    parts: Iterable[str] | str = PARTS,
    *,
    validate: bool = True,
    use_threads: bool = True,
) -> Event:
    """Load a TrackML event.

    For each requested part reads ``{prefix}-{part}.parquet`` if present (our
    cache), else ``.csv``, else ``.csv.gz``, with the TrackML dtypes of
    :mod:`trkx_ray.events.schema` (the particles' optional ``particle_type`` is
    kept). Hits are always loaded. Truth is re-ordered to the hits' order and
    must hold exactly one row per hit.

    Args:
        prefix: event prefix, e.g. ``dir/event000000001`` (the event id is
            parsed from its name).
        parts: parts to load; ask for fewer to skip files (``("hits", "truth")``).
        validate: run :meth:`Event.validate` (finite coordinates, unique
            non-negative hit ids, cells of known hits, unique particle ids).
        use_threads: let pyarrow parse with its thread pool (``False`` keeps the
            load on the calling thread, e.g. in a core-pinned worker).

    Returns:
        The event, with ``source`` set to the prefix.

    Raises:
        EventFormatError: a missing or malformed file, naming it and the
            column / line / hit id at fault.
    """
    event_id = event_id_from_prefix(prefix)
    wanted = (parts,) if isinstance(parts, str) else tuple(parts)
    names = ["hits", *(p for p in PARTS if p != "hits" and p in wanted)]
    for part in wanted:
        _part_name(part)
    base = os.fspath(prefix)
    tables: dict[str, Table] = {}
    files: dict[str, str] = {}
    for part in names:
        path = find_part_file(prefix, part)
        if path is None:
            looked = ", ".join(f"{Path(base).name}-{part}{s}" for s in SUFFIXES)
            raise EventFormatError(
                f"{base}-{part}.csv: no such file (looked for {looked} in {Path(base).parent})"
            )
        tables[part] = read_part(path, part, use_threads=use_threads)
        files[part] = str(path)
    if "truth" in tables:
        tables["truth"] = _align_truth(tables["hits"]["hit_id"], tables["truth"], files["truth"])
    event = Event(
        event_id=event_id,
        hits=tables["hits"],
        cells=tables.get("cells"),
        particles=tables.get("particles"),
        truth=tables.get("truth"),
        source=base,
    )
    if validate:
        event.validate(files)
    return event


def list_events(directory: PathLike) -> list[Path]:
    """Prefixes of the TrackML events in ``directory``, in event-id order.

    An event is found by its hits file (``event*-hits.csv``, ``.csv.gz`` or
    ``.parquet``).

    Raises:
        EventFormatError: the directory does not exist or holds no event.
    """
    root = Path(directory)
    if not root.is_dir():
        raise EventFormatError(f"{root}: no such directory")
    found: dict[tuple[int, str], Path] = {}
    for entry in os.scandir(root):
        match = _HITS_FILE.match(entry.name)
        if match is not None:
            found[(int(match.group(2)), match.group(1))] = root / match.group(1)
    if not found:
        raise EventFormatError(
            f"{root}: no TrackML events (no event*-hits.csv, .csv.gz or .parquet files)"
        )
    return [found[key] for key in sorted(found)]


def iter_events(
    directory: PathLike,
    parts: Iterable[str] | str | None = None,
    *,
    validate: bool = True,
    use_threads: bool = True,
) -> Iterator[Event]:
    """Yield the events of ``directory`` in event-id order (see :func:`load_event`).

    Args:
        directory: directory with TrackML event files.
        parts: parts to load (a missing one is an error); ``None`` loads each
            event's present parts (see :func:`present_parts`).
        validate: run :meth:`Event.validate` on each event.
        use_threads: let pyarrow parse with its thread pool.
    """
    wanted = (parts,) if isinstance(parts, str) else parts
    for prefix in list_events(directory):
        load = present_parts(prefix) if wanted is None else wanted
        yield load_event(prefix, load, validate=validate, use_threads=use_threads)


# -- writing -----------------------------------------------------------------------------
def _cast(arr: np.ndarray, dtype: np.dtype, where: str) -> np.ndarray:
    """``arr`` as ``dtype``; integers must fit."""
    arr = np.asarray(arr)
    if arr.dtype == dtype:
        return arr
    if dtype.kind in "iu" and arr.dtype.kind in "iu" and len(arr):
        info = np.iinfo(dtype)
        if arr.min() < info.min or arr.max() > info.max:
            raise EventFormatError(f"{where}: values do not fit {dtype}")
    elif dtype.kind in "iu" and arr.dtype.kind not in "iub":
        raise EventFormatError(f"{where}: has dtype {arr.dtype}, expected {dtype}")
    return arr.astype(dtype)


def _arrow_table(columns: Mapping[str, np.ndarray]) -> pa.Table:
    import pyarrow as pa

    return pa.table({name: pa.array(arr) for name, arr in columns.items()})


def _write_csv(columns: Mapping[str, np.ndarray], path: Path, gzip: bool) -> None:
    """Write a TrackML CSV (header row, shortest round-trip float formatting)."""
    import pyarrow as pa
    import pyarrow.csv as pcsv

    table = _arrow_table(columns)
    header = (",".join(columns) + "\n").encode()
    options = pcsv.WriteOptions(include_header=False, quoting_style="none")
    tmp = path.with_name(path.name + ".tmp")
    try:
        if gzip:
            buffer = pa.BufferOutputStream()
            buffer.write(header)
            pcsv.write_csv(table, buffer, options)
            codec = pa.Codec("gzip", compression_level=GZIP_LEVEL)
            with pa.OSFile(str(tmp), "wb") as stream:
                stream.write(codec.compress(buffer.getvalue()))
        else:
            with pa.OSFile(str(tmp), "wb") as stream:
                stream.write(header)
                pcsv.write_csv(table, stream, options)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _write_parquet(columns: Mapping[str, np.ndarray], path: Path) -> None:
    import pyarrow.parquet as pq

    tmp = path.with_name(path.name + ".tmp")
    try:
        pq.write_table(_arrow_table(columns), str(tmp), write_page_checksum=True)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_event(
    event: Event, out_dir: PathLike, gzip: bool = False, *, format: str = "csv"
) -> list[Path]:
    """Write an event as TrackML files, one per present part.

    Files are ``event{ID:09d}-{part}.csv`` (``.csv.gz`` with ``gzip``, or
    ``.parquet`` with ``format="parquet"``), columns in schema order with
    TrackML dtypes; floats are written in the shortest form that reads back
    to the same float32. Columns outside the schema are not written.

    Args:
        event: the event (validated first).
        out_dir: output directory (created).
        gzip: gzip-compress the CSV files.
        format: ``"csv"`` or ``"parquet"``.

    Returns:
        The files written, in part order.
    """
    if format not in ("csv", "parquet"):
        raise ValueError(f"write_event: format must be 'csv' or 'parquet', not {format!r}")
    event.validate()
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    suffix = ".parquet" if format == "parquet" else (".csv.gz" if gzip else ".csv")
    written: list[Path] = []
    for part in PARTS:
        table = event.part(part)
        if table is None:
            continue
        dtypes = {
            **SCHEMAS[part],
            **{c: d for c, d in OPTIONAL_COLUMNS[part].items() if c in table},
        }
        dropped = [c for c in table if c not in dtypes]
        if dropped:
            logger.debug("event %d: not writing %s column(s) %s", event.event_id, part, dropped)
        columns = {
            c: _cast(table[c], d, f"event {event.event_id}: {part} column {c!r}")
            for c, d in dtypes.items()
        }
        path = root / f"event{event.event_id:09d}-{part}{suffix}"
        if format == "parquet":
            _write_parquet(columns, path)
        else:
            _write_csv(columns, path, gzip)
        written.append(path)
    return written


def convert_events(src_dir: PathLike, out_dir: PathLike, *, validate: bool = True) -> list[Path]:
    """Convert every event of ``src_dir`` to the Parquet cache in ``out_dir``.

    Each event's present parts are read (CSV, csv.gz or Parquet) and written
    as ``event{ID:09d}-{part}.parquet``, which :func:`load_event` then prefers.

    Returns:
        The Parquet files written.
    """
    written: list[Path] = []
    for prefix in list_events(src_dir):
        event = load_event(prefix, present_parts(prefix), validate=validate)
        written += write_event(event, out_dir, format="parquet")
        logger.info("converted %s (%d hits)", prefix, event.num_hits)
    return written


# -- submissions ------------------------------------------------------------------------
def write_submission(
    event_id: int, hit_id: np.ndarray, track_id: np.ndarray, out_dir: PathLike
) -> Path:
    """Write a TrackML submission ``event{ID:09d}-submission.csv``.

    Args:
        event_id: the event number.
        hit_id: hit ids (one per hit).
        track_id: reconstructed track id of each hit.
        out_dir: output directory (created).

    Returns:
        The file written (columns ``event_id,hit_id,track_id``).
    """
    hit_id = np.asarray(hit_id)
    track_id = np.asarray(track_id)
    where = f"submission of event {event_id}"
    if hit_id.ndim != 1 or track_id.ndim != 1 or len(hit_id) != len(track_id):
        raise EventFormatError(
            f"{where}: hit_id {hit_id.shape} and track_id {track_id.shape} must be "
            "1-D and of equal length"
        )
    columns = {
        "event_id": np.full(len(hit_id), int(event_id), dtype=SUBMISSION["event_id"]),
        "hit_id": _cast(hit_id, SUBMISSION["hit_id"], f"{where}: hit_id"),
        "track_id": _cast(track_id, SUBMISSION["track_id"], f"{where}: track_id"),
    }
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"event{int(event_id):09d}-submission.csv"
    _write_csv(columns, path, gzip=False)
    return path


def read_submission(path: PathLike) -> dict[str, np.ndarray]:
    """Read a TrackML submission file (``.csv`` or ``.csv.gz``).

    Returns:
        ``{"event_id": int64, "hit_id": int32, "track_id": int64}`` arrays.

    Raises:
        EventFormatError: missing file, bad columns or values, duplicate hit ids.
    """
    path = Path(path)
    if not path.is_file():
        raise EventFormatError(f"{path}: no such file")
    columns = _read_csv(path, SUBMISSION, {}, use_threads=True)
    ids = np.sort(columns["hit_id"])
    dup = np.diff(ids) == 0
    if dup.any():
        raise EventFormatError(
            f"{path}: column 'hit_id' has duplicate id {int(ids[int(np.argmax(dup))])}"
        )
    return columns
