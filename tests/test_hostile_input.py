"""Reliability audit, hostile input: every malformed TrackML case, fuzzing, tiny and huge events.

Each case of the audit list (docs/reliability.md) is one parametrised case here:
a copy of the real sample (tests/data) is damaged in one way and
:func:`trkx_ray.events.load_event` must raise :class:`EventFormatError` whose
message names the file and what is wrong, or, for valid-but-unusual input,
load a valid event. Hypothesis then fuzzes the reader (random bytes, structured
mutations of the sample's CSV text, cut gzip / Parquet streams): only
``EventFormatError`` may escape. Tiny events (0, 1, 2 hits), all-noise events and
graphs emptied by a cut go through the pipeline on every edge and labeling
backend; non-finite coordinates are refused before any model runs. A dense
pile-up event (subprocess) checks that memory stays bounded.

Decisions guarded here:

* Unknown extra columns are ignored (dropped, with a logged warning), as the
  trackml-library's readers only keep the columns they know; a renamed
  required column is an error naming the missing column and the unexpected one.
* Particles with ``nhits = 0`` are valid (the real sample lists 80 of them);
  a particle claiming ``nhits > 0`` with no truth row is accepted too:
  ``nhits`` is generator-level information and derived data sets (hit
  selections, sub-sampled events) legitimately drop hits.
* A header-only file is a valid empty event; the pipeline returns an empty result.
* NaN / inf is refused in every float column (hit coordinates, cell values,
  particle vertices / momenta, truth positions / momenta / weights), not only x, y, z.
* Our Parquet cache is written with page checksums and verified on reading.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
import zlib
from collections.abc import Callable
from pathlib import Path

import hypothesis
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_events_io import _edit_line, _plain_copy

from trkx_ray.events import Event, EventFormatError, load_event, write_event
from trkx_ray.events.schema import PARTS, SCHEMAS
from trkx_ray.pipeline import Pipeline
from trkx_ray.pipeline.features import random_event

EVENT = "event000000001"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sample(sample_prefix) -> Event:
    return load_event(sample_prefix)


# -- damage helpers (each edits one part file of a plain .csv copy) ----------------------
def _path(prefix: Path, part: str) -> Path:
    return Path(f"{prefix}-{part}.csv")


def _rewrite(prefix: Path, part: str, edit: Callable[[list[list[str]]], list[list[str]]]) -> None:
    """Apply ``edit`` to the part's rows of fields (header row included)."""
    path = _path(prefix, part)
    rows = [line.split(",") for line in path.read_text().splitlines()]
    path.write_text("\n".join(",".join(r) for r in edit(rows)) + "\n")


def _drop_column(part: str, col: str) -> Callable[[Path], None]:
    def edit(prefix: Path) -> None:
        def drop(rows: list[list[str]]) -> list[list[str]]:
            k = rows[0].index(col)
            return [r[:k] + r[k + 1 :] for r in rows]

        _rewrite(prefix, part, drop)

    return edit


def _add_column(part: str, col: str, value: str) -> Callable[[Path], None]:
    def edit(prefix: Path) -> None:
        _rewrite(prefix, part, lambda rows: [rows[0] + [col]] + [r + [value] for r in rows[1:]])

    return edit


def _rename_column(part: str, old: str, new: str) -> Callable[[Path], None]:
    def edit(prefix: Path) -> None:
        _rewrite(prefix, part, lambda rows: [[new if c == old else c for c in rows[0]]] + rows[1:])

    return edit


def _set_field(part: str, line: int, col: str, value: str) -> Callable[[Path], None]:
    """Set ``col`` on 1-based file ``line`` of the part to ``value``."""

    def edit(prefix: Path) -> None:
        def put(rows: list[list[str]]) -> list[list[str]]:
            rows[line - 1][rows[0].index(col)] = value
            return rows

        _rewrite(prefix, part, put)

    return edit


def _set_line(part: str, line: int, text: str) -> Callable[[Path], None]:
    return lambda prefix: _edit_line(_path(prefix, part), line, text)


def _replace_bytes(
    part: str, data: Callable[[bytes], bytes], suffix: str
) -> Callable[[Path], None]:
    """Replace the part's .csv by ``{suffix}`` file holding ``data(csv_bytes)``."""

    def edit(prefix: Path) -> None:
        src = _path(prefix, part)
        raw = src.read_bytes()
        src.unlink()
        Path(f"{prefix}-{part}{suffix}").write_bytes(data(raw))

    return edit


def _delete(part: str) -> Callable[[Path], None]:
    return lambda prefix: _path(prefix, part).unlink()


def _gz_cut(raw: bytes) -> bytes:
    data = gzip.compress(raw)
    return data[: len(data) // 2]


def _gz_flip(raw: bytes) -> bytes:
    data = bytearray(gzip.compress(raw))
    data[len(data) // 3 : len(data) // 3 + 32] = b"\x00" * 32
    return bytes(data)


def _gz_bad_crc(raw: bytes) -> bytes:
    data = bytearray(gzip.compress(raw))
    data[-8:-4] = (zlib.crc32(raw) ^ 0xFFFFFFFF).to_bytes(4, "little")
    return bytes(data)


def _header_only(part: str) -> bytes:
    return (",".join(SCHEMAS[part]) + "\n").encode()


# (case id, damage, parts to load, regex the message must match)
MALFORMED: list[tuple[str, Callable[[Path], None], tuple[str, ...], str]] = [
    ("missing-hits-file", _delete("hits"), PARTS, r"event000000001-hits\.csv: no such file"),
    ("missing-truth-file", _delete("truth"), PARTS, r"event000000001-truth\.csv: no such file"),
    (
        "missing-column",
        _drop_column("hits", "z"),
        PARTS,
        r"hits\.csv: missing required column\(s\) \['z'\] \(header has ",
    ),
    (
        "missing-column-truth",
        _drop_column("truth", "weight"),
        PARTS,
        r"truth\.csv: missing required column\(s\) \['weight'\]",
    ),
    (
        "renamed-column-case",
        _rename_column("hits", "x", "X"),
        PARTS,
        r"hits\.csv: missing required column\(s\) \['x'\].*unexpected column\(s\) \['X'\]",
    ),
    (
        "renamed-column",
        _rename_column("particles", "nhits", "n_hits"),
        PARTS,
        r"particles\.csv: missing required column\(s\) \['nhits'\].*unexpected.*\['n_hits'\]",
    ),
    (
        "duplicated-column",
        _add_column("hits", "x", "1.0"),
        PARTS,
        r"hits\.csv: column 'x' appears twice in the header",
    ),
    (
        "wrong-dtype-float-text",
        _set_field("hits", 5, "y", "abc"),
        PARTS,
        r"hits\.csv: column 'y' at line 5: .*invalid value 'abc'",
    ),
    (
        "wrong-dtype-int-float",
        _set_field("truth", 4, "particle_id", "1.5"),
        PARTS,
        r"truth\.csv: column 'particle_id' at line 4: .*'1\.5'",
    ),
    (
        "wrong-dtype-int-overflow",
        _set_field("hits", 9, "hit_id", "3000000000"),
        PARTS,
        r"hits\.csv: column 'hit_id' at line 9: .*int32",
    ),
    (
        "wrong-dtype-huge-int",
        _set_field("particles", 3, "particle_id", "9" * 30),
        PARTS,
        r"particles\.csv: column 'particle_id' at line 3: .*int64",
    ),
    (
        "empty-value",
        _set_field("cells", 12, "value", ""),
        PARTS,
        r"cells\.csv: column 'value' has an empty value at line 12",
    ),
    (
        "wrong-field-count",
        _set_line("hits", 7, "20,1.0,2.0"),
        PARTS,
        r"hits\.csv: line 7 has the wrong number of fields \(expected 7\)",
    ),
    (
        "empty-file-csv",
        _replace_bytes("hits", lambda raw: b"", ".csv"),
        PARTS,
        r"hits\.csv: file is empty \(0 bytes\)",
    ),
    (
        "empty-file-gz",
        _replace_bytes("truth", lambda raw: b"", ".csv.gz"),
        PARTS,
        r"truth\.csv\.gz: file is empty \(0 bytes\)",
    ),
    (
        "gzip-of-nothing",
        _replace_bytes("hits", lambda raw: gzip.compress(b""), ".csv.gz"),
        PARTS,
        r"hits\.csv\.gz: file is empty \(no header row\)",
    ),
    (
        "non-utf8-header",
        _replace_bytes("particles", lambda raw: b"\xff\xfe" + raw, ".csv"),
        PARTS,
        r"particles\.csv: header row is not UTF-8 text",
    ),
    (
        "truncated-gzip",
        _replace_bytes("hits", _gz_cut, ".csv.gz"),
        PARTS,
        r"hits\.csv\.gz: corrupt or truncated gzip data",
    ),
    (
        "corrupt-gzip",
        _replace_bytes("cells", _gz_flip, ".csv.gz"),
        PARTS,
        r"cells\.csv\.gz: ",
    ),
    (
        "gzip-bad-crc",
        _replace_bytes("truth", _gz_bad_crc, ".csv.gz"),
        PARTS,
        r"truth\.csv\.gz: corrupt or truncated gzip data",
    ),
    (
        "gzip-header-plain-text",
        _replace_bytes("hits", lambda raw: raw, ".csv.gz"),
        PARTS,
        r"hits\.csv\.gz: ",
    ),
    (
        "nan-coordinate",
        _set_field("hits", 5, "x", "nan"),
        ("hits",),
        r"hits\.csv: column 'x' has a non-finite value \(nan\) at row 3 \(hit_id 53\)",
    ),
    (
        "inf-coordinate",
        _set_field("hits", 5, "z", "-inf"),
        ("hits",),
        r"hits\.csv: column 'z' has a non-finite value \(-inf\) at row 3 \(hit_id 53\)",
    ),
    (
        "overflowing-coordinate",
        _set_field("hits", 4, "y", "1e400"),
        ("hits",),
        r"hits\.csv: column 'y'",
    ),
    (
        "nan-truth-weight",
        _set_field("truth", 3, "weight", "NaN"),
        ("hits", "truth"),
        r"truth\.csv: column 'weight' has a non-finite value \(nan\) at row \d+ \(hit_id 9\)",
    ),
    (
        "inf-particle-momentum",
        _set_field("particles", 2, "px", "inf"),
        ("hits", "particles"),
        r"particles\.csv: column 'px' has a non-finite value \(inf\) at row 0 "
        r"\(particle_id 4505867370102784\)",
    ),
    (
        "nan-cell-value",
        _set_field("cells", 2, "value", "nan"),
        ("hits", "cells"),
        r"cells\.csv: column 'value' has a non-finite value \(nan\) at row 0",
    ),
    (
        "duplicate-hit-id",
        _set_field("hits", 3, "hit_id", "6"),
        ("hits",),
        r"hits\.csv: column 'hit_id' has duplicate id 6",
    ),
    (
        "negative-hit-id",
        _set_field("hits", 4, "hit_id", "-5"),
        ("hits",),
        r"hits\.csv: column 'hit_id' has a negative id -5 at row 2",
    ),
    (
        "truth-row-for-unknown-hit",
        _set_field("truth", 6, "hit_id", "777777"),
        PARTS,
        r"truth\.csv: line 6 is for hit_id 777777, which is not in the hits",
    ),
    (
        "truth-row-missing",
        lambda prefix: _rewrite(prefix, "truth", lambda rows: rows[:-1]),
        PARTS,
        r"truth\.csv: has no row for 1 hit\(s\), the first being hit_id \d+",
    ),
    (
        "truth-row-duplicated",
        lambda prefix: _rewrite(prefix, "truth", lambda rows: rows + [rows[1]]),
        PARTS,
        r"truth\.csv: has 2 rows for hit_id 6",
    ),
    (
        "cells-row-for-unknown-hit",
        _set_field("cells", 8, "hit_id", "888888"),
        PARTS,
        r"cells\.csv: row 6 is for unknown hit_id 888888",
    ),
    (
        "duplicate-particle-id",
        _set_field("particles", 3, "particle_id", "4505867370102784"),
        PARTS,
        r"particles\.csv: column 'particle_id' has duplicate id 4505867370102784",
    ),
]


@pytest.mark.parametrize(
    ("damage", "parts", "message"),
    [pytest.param(d, p, m, id=i) for i, d, p, m in MALFORMED],
)
def test_malformed_event_is_refused(data_dir, tmp_path, damage, parts, message):
    """Each malformed case: EventFormatError naming the file and the column / line / id."""
    prefix = _plain_copy(data_dir, tmp_path)
    load_event(prefix, parts)  # the undamaged copy loads
    damage(prefix)
    with pytest.raises(EventFormatError, match=message) as info:
        load_event(prefix, parts)
    assert str(tmp_path / EVENT) in str(info.value)  # the full file path


def test_extra_columns_are_ignored(data_dir, tmp_path, caplog, sample):
    """Decision: unknown extra columns load (dropped, warned); values are unchanged."""
    prefix = _plain_copy(data_dir, tmp_path)
    _add_column("hits", "charge", "abc")(prefix)
    _add_column("truth", "Unnamed: 0", "1")(prefix)
    with caplog.at_level(logging.WARNING, logger="trkx_ray.events.io"):
        event = load_event(prefix)
    assert list(event.hits) == list(SCHEMAS["hits"])
    assert list(event.truth) == list(SCHEMAS["truth"])
    assert np.array_equal(event.hits["x"], sample.hits["x"])
    assert "hits.csv: ignoring unknown column(s) ['charge']" in caplog.text
    assert "truth.csv: ignoring unknown column(s) ['Unnamed: 0']" in caplog.text


def test_reordered_columns_load(data_dir, tmp_path, sample):
    prefix = _plain_copy(data_dir, tmp_path)
    _rewrite(prefix, "hits", lambda rows: [r[::-1] for r in rows])
    event = load_event(prefix)
    for col in SCHEMAS["hits"]:
        assert np.array_equal(event.hits[col], sample.hits[col]), col


def test_particles_without_hits_are_valid(data_dir, tmp_path, sample):
    """Real TrackML lists particles with nhits = 0; a claimed nhits > 0 without truth rows loads too."""
    assert int((sample.particles["nhits"] == 0).sum()) == 80
    prefix = _plain_copy(data_dir, tmp_path)
    pid = sample.truth["particle_id"]
    victim = int(pid[pid != 0][0])
    assert int(sample.particles["nhits"][sample.particles["particle_id"] == victim][0]) > 0

    def orphan(rows: list[list[str]]) -> list[list[str]]:  # truth rows of victim -> noise
        k = rows[0].index("particle_id")
        for r in rows[1:]:
            if r[k] == str(victim):
                r[k] = "0"
        return rows

    _rewrite(prefix, "truth", orphan)
    event = load_event(prefix)
    assert victim in event.particles["particle_id"]
    assert victim not in event.truth["particle_id"]


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz", ".parquet"])
def test_header_only_or_empty_table_is_an_empty_event(tmp_path, sample, suffix):
    empty = Event(event_id=1, **{p: {c: a[:0] for c, a in sample.part(p).items()} for p in PARTS})
    if suffix == ".parquet":
        write_event(empty, tmp_path, format="parquet")
    else:
        for part in PARTS:
            data = _header_only(part)
            Path(tmp_path / f"{EVENT}-{part}{suffix}").write_bytes(
                gzip.compress(data) if suffix.endswith(".gz") else data
            )
    event = load_event(tmp_path / EVENT)
    assert event.num_hits == 0 and event.num_particles == 0
    result = Pipeline.from_config("default")(event)
    assert result.track_id.shape == (0,) and result.num_edges == dict.fromkeys(result.num_edges, 0)


def test_corrupt_parquet_cache(sample, tmp_path):
    written = write_event(sample, tmp_path, format="parquet")
    hits = next(p for p in written if "hits" in p.name)
    data = bytearray(hits.read_bytes())
    data[4:64] = b"\x00" * 60  # first page header / data
    hits.write_bytes(bytes(data))
    with pytest.raises(EventFormatError, match=r"hits\.parquet: "):
        load_event(tmp_path / EVENT)
    hits.write_bytes(b"PAR1" + os.urandom(16))
    with pytest.raises(EventFormatError, match=r"hits\.parquet: cannot read Parquet file"):
        load_event(tmp_path / EVENT)


def test_parquet_cache_pages_are_checksummed(sample, tmp_path):
    """One flipped bit inside a column page of our cache: refused, not silently altered values."""
    written = write_event(sample, tmp_path, format="parquet")
    hits = next(p for p in written if "hits" in p.name)
    data = bytearray(hits.read_bytes())
    data[len(data) // 3] ^= 0x10
    hits.write_bytes(bytes(data))
    with pytest.raises(
        EventFormatError, match=r"hits\.parquet: cannot read Parquet file .*CRC checksum"
    ):
        load_event(tmp_path / EVENT)


# -- tiny events: reader and pipeline ---------------------------------------------------------
def _first_hits(sample: Event, k: int) -> Event:
    """The sample's first ``k`` hits with their cells and truth, all particles."""
    keep = sample.hits["hit_id"][:k]
    cell_rows = np.isin(sample.cells["hit_id"], keep)
    return Event(
        event_id=1,
        hits={c: a[:k].copy() for c, a in sample.hits.items()},
        cells={c: a[cell_rows].copy() for c, a in sample.cells.items()},
        particles={c: a.copy() for c, a in sample.particles.items()},
        truth={c: a[:k].copy() for c, a in sample.truth.items()},
        source=f"first {k} hits",
    )


def _close_pair() -> Event:
    """Two hits 1 micron apart: the embedding graph has one edge."""
    event = random_event(2, seed=0, event_id=5)
    event.hits["x"][:] = [100.0, 100.001]
    event.hits["y"][:] = [5.0, 5.0]
    event.hits["z"][:] = [10.0, 10.001]
    return event


@pytest.mark.parametrize("k", [0, 1, 2])
def test_tiny_event_round_trip(sample, tmp_path, k):
    write_event(_first_hits(sample, k), tmp_path, gzip=True)
    event = load_event(tmp_path / EVENT)
    assert event.num_hits == k and len(event.truth["hit_id"]) == k
    assert event.num_particles == sample.num_particles


EDGE_BACKENDS = ("radius", "faiss", "frnn")
LABEL_BACKENDS = ("scipy", "sknetwork", "torch", "dbscan")


@pytest.fixture(scope="module")
def pipelines() -> dict[tuple[str, str], Pipeline]:
    return {
        (e, lab): Pipeline.from_config(
            "default", overrides={"edges": {"backend": e}, "labeling": {"backend": lab}}
        )
        for e in EDGE_BACKENDS
        for lab in LABEL_BACKENDS
    }


def _assert_clean(result, n: int) -> None:
    assert result.track_id.shape == (n,) and result.track_id.dtype == np.int64
    assert result.hit_id.shape == (n,)
    assert set(result.timings) >= {"build_edges", "filtering", "gnn", "labeling", "total"}
    assert all(np.isfinite(v) and v >= 0 for v in result.timings.values())
    if n:
        assert result.track_id.min() >= 0


@pytest.mark.parametrize("labeling", LABEL_BACKENDS)
@pytest.mark.parametrize("edges", EDGE_BACKENDS)
def test_tiny_events_through_pipeline(pipelines, sample, edges, labeling):
    """0, 1, 2 hits (and a 2-hit pair with an edge) give clean results on every backend."""
    pipe = pipelines[(edges, labeling)]
    for k in (0, 1, 2):
        result = pipe(_first_hits(sample, k))
        _assert_clean(result, k)
        assert result.num_edges == {"build_edges": 0, "filtering": 0, "gnn": 0}
        assert result.num_tracks == k
    pair = pipe(_close_pair(), keep_graphs=True)
    _assert_clean(pair, 2)
    assert pair.num_edges["build_edges"] == 1
    assert pair.graphs["build_edges"]["edges"].tolist() in ([[0], [1]], [[1], [0]])


def test_no_edge_passes_the_filter_cut(sample):
    """A filter cut nothing passes: every hit is its own track, no crash in the GNN or labeling."""
    result = Pipeline.from_config("default", overrides={"filter": {"cut": 0.999999}})(sample)
    _assert_clean(result, sample.num_hits)
    assert result.num_edges["build_edges"] > 0
    assert result.num_edges["filtering"] == 0 and result.num_edges["gnn"] == 0
    assert result.num_tracks == sample.num_hits


def test_all_noise_event(sample):
    """Hits with no track structure (uniform in the detector, no truth) still label every hit."""
    event = random_event(3000, seed=4, event_id=9)
    result = Pipeline.from_config("default")(event)
    _assert_clean(result, 3000)
    noise = _first_hits(sample, 200)
    noise.truth["particle_id"][:] = 0
    _assert_clean(Pipeline.from_config("default")(noise.validate()), 200)


@pytest.mark.parametrize(("col", "value"), [("x", np.nan), ("y", np.inf), ("z", -np.inf)])
def test_non_finite_coordinates_reach_the_pipeline(sample, col, value):
    """Bypassing the reader: refused before the models, naming event, column and hit id."""
    event = _first_hits(sample, 50)
    pipe = Pipeline.from_config("default")
    pipe(event)  # fine, and fills the event's derived-quantity cache
    event.hits[col][7] = value
    hit = int(event.hits["hit_id"][7])
    with pytest.raises(
        EventFormatError,
        match=rf"^first 50 hits: hits column '{col}' has a non-finite value .* at row 7 \(hit_id {hit}\)",
    ):
        pipe(event)


def test_event_without_coordinates_reaching_the_pipeline(sample):
    event = _first_hits(sample, 10)
    del event.hits["y"]
    with pytest.raises(EventFormatError, match=r"^first 10 hits: hits lack column 'y'"):
        Pipeline.from_config("default")(event)
    del event.hits["hit_id"]
    with pytest.raises(EventFormatError, match=r"^first 10 hits: hits lack column 'hit_id'"):
        Pipeline.from_config("default")(event)


def test_dense_cluster_missed_by_the_density_sample_is_refused():
    """Hits piled on one spot, away from the hits the density estimate samples: the built
    graph's actual degree is checked before the filter and GNN (whose memory grows with it)."""
    from trkx_ray.pipeline.pipeline import _DENSITY_SAMPLE, PipelineError

    n = 700
    event = random_event(n, seed=3, event_id=12)
    sampled = np.linspace(0, n - 1, _DENSITY_SAMPLE).astype(np.int64)
    pile = np.setdiff1d(np.arange(n), sampled)
    for col, value in (("x", 150.0), ("y", -40.0), ("z", 300.0)):
        event.hits[col][pile] = value
    with pytest.raises(
        PipelineError,
        match=r"^random event 12: the embedding graph has \d+ edges, \d+ neighbours per hit "
        r"on average, over twice edges\.max_edges_per_hit = 128",
    ):
        Pipeline.from_config("default")(event)
    spread = random_event(n, seed=3, event_id=12)  # the same hits, not piled up: fine
    _assert_clean(Pipeline.from_config("default")(spread), n)


# -- hypothesis fuzzing --------------------------------------------------------------------------
#: examples per fuzz test; TRKX_FUZZ_EXAMPLES=N runs N random (not derandomized) ones instead,
#: for a deeper local hunt (the default run is reproducible: derandomized, no example database).
_DEEP = int(os.environ.get("TRKX_FUZZ_EXAMPLES", "0"))
FUZZ = settings(
    max_examples=_DEEP or 1500,
    deadline=None,
    derandomize=not _DEEP,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

TOKENS = [
    "nan",
    "inf",
    "-inf",
    "-1",
    "1e400",
    "-1e400",
    "",
    "abc",
    "9" * 25,
    "-" + "9" * 20,
    "0x10",
    "1,2",
    '"',
    "\x00",
    "é",
    " 7",
    "2147483648",
    "1e-50",
    "NaN",
]


@pytest.fixture(scope="module")
def small_texts(sample) -> dict[str, bytes]:
    """The sample's first 300 hits (their cells / truth, all particles) as CSV bytes per part."""
    with tempfile.TemporaryDirectory() as tmp:
        write_event(_first_hits(sample, 300), tmp)
        return {p: Path(tmp, f"{EVENT}-{p}.csv").read_bytes() for p in PARTS}


def _load_or_format_error(directory: Path, parts: tuple[str, ...]) -> None:
    """The fuzz property: a valid event, or EventFormatError naming one of the event's files."""
    try:
        event = load_event(directory / EVENT, parts)
    except EventFormatError as exc:
        message = str(exc)
        assert f"{directory / EVENT}-" in message, message
        # outcome classes for --hypothesis-show-statistics: the message without names / numbers
        hypothesis.event(re.sub(r"'[^']*'|\[.*|\(.*|\d+", "_", message.split(": ", 1)[-1])[:40])
        return
    hypothesis.event("loads")
    event.validate()


def _write_parts(
    directory: Path, texts: dict[str, bytes], part: str, data: bytes, suffix: str
) -> None:
    for old in directory.glob(f"{EVENT}-*"):
        old.unlink()
    for p, text in texts.items():
        if p != part:
            (directory / f"{EVENT}-{p}.csv").write_bytes(text)
    (directory / f"{EVENT}-{part}{suffix}").write_bytes(data)


@FUZZ
@given(
    part=st.sampled_from(PARTS),
    suffix=st.sampled_from([".csv", ".csv.gz", ".parquet"]),
    body=st.binary(max_size=600),
    with_header=st.booleans(),
    compress=st.booleans(),
)
def test_fuzz_random_bytes(small_texts, part, suffix, body, with_header, compress):
    """Random bytes (after a valid header or not, gzip-compressed or raw) in any part file."""
    data = (_header_only(part) if with_header else b"") + body
    if compress and suffix == ".csv.gz":
        data = gzip.compress(data)
    with tempfile.TemporaryDirectory() as tmp:
        _write_parts(Path(tmp), small_texts, part, data, suffix)
        _load_or_format_error(Path(tmp), PARTS)


def _mutate(rows: list[list[str]], op: tuple, rng: np.random.Generator) -> list[list[str]]:
    """Apply one structured mutation to a CSV's rows of fields (header first)."""
    kind = op[0]
    width = len(rows[0])
    k = op[1] % width
    i = 1 + op[2] % max(len(rows) - 1, 1)
    if kind == "drop_column":
        return [r[:k] + r[k + 1 :] for r in rows]
    if kind == "duplicate_column":
        return [r + [r[k]] if len(r) > k else r for r in rows]
    if kind == "rename_column":
        rows[0][k] = op[3]
        return rows
    if kind == "reorder_columns":
        perm = rng.permutation(width)
        return [[r[j] for j in perm] if len(r) == width else r for r in rows]
    if kind == "delete_row":
        return rows[:i] + rows[i + 1 :] if len(rows) > 1 else rows
    if kind == "duplicate_row":
        return rows[: i + 1] + [list(rows[i])] + rows[i + 1 :] if len(rows) > 1 else rows
    if kind == "replace_cell":
        row = rows[i if len(rows) > 1 else 0]
        if k < len(row):
            row[k] = op[3]
        return rows
    raise AssertionError(kind)  # pragma: no cover


MUTATION = st.tuples(
    st.sampled_from(
        [
            "drop_column",
            "duplicate_column",
            "rename_column",
            "reorder_columns",
            "delete_row",
            "duplicate_row",
            "replace_cell",
            "replace_cell",
        ]
    ),
    st.integers(0, 1000),
    st.integers(0, 10_000),
    st.one_of(st.sampled_from(TOKENS), st.text(max_size=8)),
)


@FUZZ
@given(
    part=st.sampled_from(PARTS),
    mutations=st.lists(MUTATION, min_size=1, max_size=4),
    cut=st.one_of(st.none(), st.floats(0.0, 1.0)),
    container=st.sampled_from(["csv", "gz", "gz-cut", "gz-flip"]),
    seed=st.integers(0, 2**16),
)
def test_fuzz_structured_mutations(small_texts, part, mutations, cut, container, seed):
    """Drop / duplicate / rename / reorder columns, delete / duplicate rows, hostile cell tokens,
    text cut at a random byte, gzip stream cut or damaged at a random byte."""
    rng = np.random.default_rng(seed)
    rows = [line.split(",") for line in small_texts[part].decode().splitlines()]
    for op in mutations:
        rows = _mutate(rows, op, rng)
    data = ("\n".join(",".join(r) for r in rows) + "\n").encode("utf-8", "surrogatepass")
    if cut is not None and container == "csv":
        data = data[: int(cut * len(data))]
    suffix = ".csv"
    if container != "csv":
        suffix = ".csv.gz"
        data = gzip.compress(data)
        pos = int((cut if cut is not None else rng.random()) * len(data))
        if container == "gz-cut":
            data = data[:pos]
        elif container == "gz-flip" and data:
            flipped = bytearray(data)
            flipped[min(pos, len(data) - 1)] ^= 1 + int(rng.integers(0, 255))
            data = bytes(flipped)
    with tempfile.TemporaryDirectory() as tmp:
        _write_parts(Path(tmp), small_texts, part, data, suffix)
        _load_or_format_error(Path(tmp), PARTS)


@pytest.fixture(scope="module")
def small_parquet(sample) -> dict[str, bytes]:
    """The same small event as :func:`small_texts`, as our Parquet cache files (bytes per part)."""
    with tempfile.TemporaryDirectory() as tmp:
        write_event(_first_hits(sample, 300), tmp, format="parquet")
        return {p: Path(tmp, f"{EVENT}-{p}.parquet").read_bytes() for p in PARTS}


@FUZZ
@given(
    part=st.sampled_from(PARTS),
    where=st.floats(0.0, 1.0),
    how=st.sampled_from(["cut", "flip", "zero"]),
)
def test_fuzz_parquet_cache(small_parquet, part, where, how):
    """A Parquet cache file cut or damaged at a random byte."""
    data = bytearray(small_parquet[part])
    pos = min(int(where * len(data)), len(data) - 1)
    if how == "cut":
        data = data[:pos]
    elif how == "flip":
        data[pos] ^= 0xA5
    else:
        data[pos : pos + 16] = b"\x00" * len(data[pos : pos + 16])
    with tempfile.TemporaryDirectory() as tmp:
        for p, good in small_parquet.items():
            Path(tmp, f"{EVENT}-{p}.parquet").write_bytes(bytes(data) if p == part else good)
        _load_or_format_error(Path(tmp), PARTS)


# -- a dense (pile-up x10) event: bounded memory --------------------------------------------------
@pytest.fixture(scope="module")
def dense_event(tmp_path_factory) -> Path:
    """A pile-up-2000 event (~1.2M hits), simulated once and written as our Parquet cache files.

    Simulated in a fresh process (the test process stays small) with the benchmark's own
    builder, ``scripts/bench_big_event.py``'s :func:`simulate_dense_event` (seed 11, its
    default); both runs below read it with ``--prefix`` instead of each simulating it again
    (the simulation takes longer than the refused run and a third of the accepted one).
    """
    out = tmp_path_factory.mktemp("dense_event")
    code = (
        "import sys\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "from bench_big_event import simulate_dense_event\n"
        "from trkx_ray.events import write_event\n"
        "write_event(simulate_dense_event(2000.0, seed=11), sys.argv[2], format='parquet')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(REPO / "scripts"), str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (hits,) = out.glob("event*-hits.parquet")
    return hits.with_name(hits.name.removesuffix("-hits.parquet"))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("overrides", "status"),
    [
        pytest.param([], "refused", id="default-config-refused"),
        pytest.param(["--override", "edges.radius=0.06"], "ok", id="radius-0.06-runs"),
    ],
)
def test_dense_event_memory_is_bounded(dense_event, overrides, status):
    """A pile-up-2000 event (~1.2M hits) on CPU, 2 threads, in a fresh process, peak RSS < 12 GB.

    With the default config the embedding graph would hold ~600 neighbours per hit: the
    ``edges.max_edges_per_hit`` guard refuses it with a clear message before building it.
    With a radius that passes the guard (0.06: 8.8M candidate edges, 4.0M after the filter,
    1.1M after the GNN with the weights of session 13) the whole pipeline runs through its
    chunked stages (16,384 rows per chunk) in ~1.5 min on both cores of the AVX2 machine of
    2026-12-02, peak 5.2 GB (radius 0.07 took ~2.3 min there). Peak RSS counts the
    process's whole life: reading the event, models, pipeline.
    """
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "bench_big_event.py"),
            "--prefix",
            str(dense_event),
            "--threads",
            "2",
            *overrides,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["num_hits"] > 1_000_000
    assert out["peak_rss_gb"] < 12.0, out
    assert out["status"] == status, out
    if status == "refused":
        # refused on the estimate, before the graph is built; the message names the event
        assert out["error"].startswith(f"{dense_event}: the embedding graph would have "), out
        assert "max_edges_per_hit = 128" in out["error"], out
    else:
        edges = out["num_edges"]
        assert edges["build_edges"] > 5_000_000, out
        assert edges["build_edges"] >= edges["filtering"] >= edges["gnn"] > 0, out
        assert 0 < out["num_tracks"] <= out["num_hits"]
        assert set(out["timings_s"]) >= {"build_edges", "filtering", "gnn", "labeling", "total"}


def test_merge_events_keeps_ids_unique():
    """The dense-event builder (two simulated events) gives a valid event."""
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        from bench_big_event import merge_events
    finally:
        sys.path.remove(str(REPO / "scripts"))
    from trkx_ray.events.simulate import simulate_event

    a, b = simulate_event(pileup=2, seed=1), simulate_event(pileup=2, seed=2)
    merged = merge_events([a, b], event_id=3)
    assert merged.num_hits == a.num_hits + b.num_hits
    assert merged.num_particles == a.num_particles + b.num_particles
    assert len(np.unique(merged.hits["hit_id"])) == merged.num_hits
    noise = merged.truth["particle_id"] == 0
    assert np.isin(merged.truth["particle_id"][~noise], merged.particles["particle_id"]).all()
    assert int(noise.sum()) == int(
        (a.truth["particle_id"] == 0).sum() + (b.truth["particle_id"] == 0).sum()
    )
