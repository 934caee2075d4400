"""Tests for trkx_ray.events.io: TrackML CSV / csv.gz / Parquet reading and writing."""

from __future__ import annotations

import gzip
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import trkx_ray.events as events
from trkx_ray.events import (
    Event,
    EventFormatError,
    convert_events,
    iter_events,
    list_events,
    load_event,
    present_parts,
    read_submission,
    write_event,
    write_submission,
)
from trkx_ray.events.__main__ import main
from trkx_ray.events.schema import OPTIONAL_COLUMNS, PARTS, SCHEMAS


@pytest.fixture(scope="module")
def sample(sample_prefix) -> Event:
    return load_event(sample_prefix)


def _bits(arr: np.ndarray) -> np.ndarray:
    """The raw bytes of an array, for bit-identical comparisons (NaN, -0.0 included)."""
    return np.ascontiguousarray(arr).view(np.uint8)


def assert_events_identical(a: Event, b: Event) -> None:
    assert a.event_id == b.event_id
    for name in PARTS:
        ta, tb = a.part(name), b.part(name)
        assert (ta is None) == (tb is None), name
        if ta is None:
            continue
        assert sorted(ta) == sorted(tb), name
        for col in ta:
            assert ta[col].dtype == tb[col].dtype, (name, col)
            assert np.array_equal(_bits(ta[col]), _bits(tb[col])), (name, col)


def _plain_copy(data_dir: Path, tmp_path: Path, event: str = "event000000001") -> Path:
    """Decompress the sample's files into ``tmp_path`` (editable .csv files)."""
    for part in PARTS:
        text = gzip.decompress((data_dir / f"{event}-{part}.csv.gz").read_bytes())
        (tmp_path / f"{event}-{part}.csv").write_bytes(text)
    return tmp_path / event


def _edit_line(path: Path, line: int, new: str) -> None:
    """Replace 1-based ``line`` of a CSV file."""
    lines = path.read_text().splitlines()
    lines[line - 1] = new
    path.write_text("\n".join(lines) + "\n")


# -- the real sample ---------------------------------------------------------------
def test_sample_figures(sample, sample_prefix):
    assert sample.event_id == 1
    assert sample.source == str(sample_prefix)
    assert sample.num_hits == 5527
    assert sample.num_particles == 548
    assert round(float(np.mean(sample.truth["particle_id"] == 0)), 2) == 0.15
    assert round(float(np.sum(sample.truth["weight"], dtype=np.float64)), 4) == 0.0513
    assert "particle_type" in sample.particles
    assert np.isin(sample.particles["particle_type"], [-211, 211, 11, -11, 13, -13, 2212]).any()
    hit_id = sample.hits["hit_id"]
    assert not np.array_equal(hit_id, np.arange(1, len(hit_id) + 1))
    assert len(sample.cells["hit_id"]) == 18564


def test_sample_dtypes(sample):
    for name in PARTS:
        table = sample.part(name)
        expected = {**SCHEMAS[name], **OPTIONAL_COLUMNS[name]}
        for col, arr in table.items():
            assert arr.dtype == expected[col], (name, col)
            assert arr.flags.writeable and arr.ndim == 1


def test_matches_pandas_reference(sample, data_dir):
    """The same values as pandas.read_csv with TrackML dtypes (as the trackml-library)."""
    for name in PARTS:
        dtypes = {**SCHEMAS[name], **OPTIONAL_COLUMNS[name]}
        frame = pd.read_csv(
            data_dir / f"event000000001-{name}.csv.gz", header=0, index_col=False, dtype=dtypes
        )
        for col in frame.columns:
            assert np.array_equal(sample.part(name)[col], frame[col].to_numpy()), (name, col)


def test_parts_subset(sample_prefix, sample):
    event = load_event(sample_prefix, parts=("truth",))
    assert event.cells is None and event.particles is None
    assert np.array_equal(event.truth["tx"], sample.truth["tx"])
    only = load_event(str(sample_prefix), parts="hits", validate=False, use_threads=False)
    assert only.truth is None and only.num_hits == 5527
    with pytest.raises(EventFormatError, match="unknown event part 'track'"):
        load_event(sample_prefix, parts=("hits", "track"))


def test_truth_is_reordered_to_hits(data_dir, tmp_path, sample):
    prefix = _plain_copy(data_dir, tmp_path)
    truth = pd.read_csv(f"{prefix}-truth.csv")
    truth.sample(frac=1.0, random_state=3).to_csv(f"{prefix}-truth.csv", index=False)
    event = load_event(prefix)
    assert np.array_equal(event.truth["hit_id"], event.hits["hit_id"])
    for col in sample.truth:
        assert np.array_equal(event.truth[col], sample.truth[col]), col


def test_hits_in_any_order(data_dir, tmp_path):
    prefix = _plain_copy(data_dir, tmp_path)
    hits = pd.read_csv(f"{prefix}-hits.csv")
    hits.iloc[::-1].to_csv(f"{prefix}-hits.csv", index=False)
    event = load_event(prefix)
    assert event.hits["hit_id"][0] == hits["hit_id"].iloc[-1]
    assert np.array_equal(event.truth["hit_id"], event.hits["hit_id"])


# -- round trips --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "suffix"),
    [({}, ".csv"), ({"gzip": True}, ".csv.gz"), ({"format": "parquet"}, ".parquet")],
)
def test_round_trip(sample, tmp_path, kwargs, suffix):
    files = write_event(sample, tmp_path / "out", **kwargs)
    assert [f.name for f in files] == [f"event000000001-{p}{suffix}" for p in PARTS]
    back = load_event(tmp_path / "out" / "event000000001")
    assert_events_identical(sample, back)
    # written again from the copy: the same bytes
    again = write_event(back, tmp_path / "again", **kwargs)
    if suffix == ".csv":
        assert all(a.read_bytes() == b.read_bytes() for a, b in zip(files, again))


def test_csv_header_and_gzip(sample, tmp_path):
    (path,) = [p for p in write_event(sample, tmp_path, gzip=True) if "hits" in p.name]
    lines = gzip.decompress(path.read_bytes()).decode().splitlines()
    assert lines[0] == "hit_id,x,y,z,volume_id,layer_id,module_id"
    assert lines[1] == "6,-76.566,-11.3673,-1502.5,7,2,1"


def test_float32_round_trip_of_arbitrary_bits(tmp_path):
    """Every finite float32 (subnormals, extremes, -0.0) survives CSV writing."""
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2**32, size=20000, dtype=np.uint64).astype(np.uint32)
    values = bits.view(np.float32)
    special = np.array(
        [0.0, -0.0, 1e-45, -1e-45, 1.1754944e-38, 3.4028235e38, -3.4028235e38, 0.1, 1 / 3],
        dtype=np.float32,
    )
    values = np.concatenate([special, values[np.isfinite(values)]])
    n = len(values)
    hits = {
        "hit_id": np.arange(1, n + 1, dtype=np.int32),
        "x": values,
        "y": values[::-1].copy(),
        "z": np.zeros(n, dtype=np.float32),
        "volume_id": np.full(n, 7, dtype=np.int32),
        "layer_id": np.full(n, 2, dtype=np.int32),
        "module_id": np.arange(n, dtype=np.int32),
    }
    event = Event(event_id=42, hits=hits)
    for kwargs in ({}, {"gzip": True}):
        out = tmp_path / str(len(kwargs))
        write_event(event, out, **kwargs)
        assert_events_identical(event, load_event(out / "event000000042", parts="hits"))


def test_write_event_casts_to_schema(sample, tmp_path):
    hits = {
        k: v.astype(np.float64 if v.dtype.kind == "f" else np.int64) for k, v in sample.hits.items()
    }
    hits["extra"] = np.zeros(sample.num_hits)
    write_event(Event(event_id=5, hits=hits), tmp_path)
    back = load_event(tmp_path / "event000000005", parts="hits")
    assert list(back.hits) == list(SCHEMAS["hits"])
    assert np.array_equal(back.hits["x"], sample.hits["x"])
    too_big = dict(hits, hit_id=hits["hit_id"] + 2**31)
    with pytest.raises(EventFormatError, match="hits column 'hit_id': values do not fit int32"):
        write_event(Event(event_id=5, hits=too_big), tmp_path)
    with pytest.raises(ValueError, match="format must be 'csv' or 'parquet'"):
        write_event(sample, tmp_path, format="root")


def test_parquet_cache_is_preferred(sample, data_dir, tmp_path):
    prefix = _plain_copy(data_dir, tmp_path)
    small = Event(
        event_id=1,
        hits={k: v[:10] for k, v in sample.hits.items()},
        truth={k: v[:10] for k, v in sample.truth.items()},
    )
    write_event(small, tmp_path, format="parquet")
    event = load_event(prefix, parts=("hits", "truth", "particles"))
    assert event.num_hits == 10  # from Parquet
    assert event.num_particles == 548  # no particles Parquet: from CSV


def test_convert_events_and_cli(data_dir, tmp_path, sample, capsys):
    written = convert_events(data_dir, tmp_path / "pq")
    assert sorted(p.name for p in written) == sorted(f"event000000001-{p}.parquet" for p in PARTS)
    assert_events_identical(sample, load_event(tmp_path / "pq" / "event000000001"))
    assert main(["convert", str(data_dir), str(tmp_path / "cli")]) == 0
    assert "wrote 4 Parquet file(s)" in capsys.readouterr().out
    assert_events_identical(sample, load_event(tmp_path / "cli" / "event000000001"))
    assert main(["info", str(tmp_path / "cli")]) == 0
    assert "event 1: 5527 hits, 548 particles, noise fraction 0.150" in capsys.readouterr().out
    assert main(["convert", str(tmp_path / "nothing"), str(tmp_path / "x")]) == 2
    assert "no such directory" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["convert", "--help"])
    assert exc.value.code == 0
    assert "parquet" in capsys.readouterr().out


def test_list_and_iter_events_in_id_order(sample, tmp_path):
    hits_only = Event(event_id=0, hits=sample.hits, truth=sample.truth)
    for event_id, kwargs in ((1000, {}), (2, {"gzip": True}), (30, {"format": "parquet"})):
        hits_only.event_id = event_id
        write_event(hits_only, tmp_path, **kwargs)
    (tmp_path / "event000000002-submission.csv").write_text("event_id,hit_id,track_id\n")
    prefixes = list_events(tmp_path)
    assert [p.name for p in prefixes] == ["event000000002", "event000000030", "event000001000"]
    ids = [e.event_id for e in iter_events(tmp_path, parts=("hits", "truth"))]
    assert ids == [2, 30, 1000]
    loaded = list(iter_events(tmp_path))  # present parts
    assert [e.event_id for e in loaded] == [2, 30, 1000]
    assert all(e.truth is not None and e.cells is None for e in loaded)
    assert present_parts(prefixes[0]) == ("hits", "truth")
    with pytest.raises(EventFormatError, match="event000000002-cells.csv: no such file"):
        next(iter_events(tmp_path, parts=PARTS))


def test_list_events_errors(tmp_path):
    with pytest.raises(EventFormatError, match=f"{tmp_path / 'missing'}: no such directory"):
        list_events(tmp_path / "missing")
    with pytest.raises(EventFormatError, match=f"{tmp_path}: no TrackML events"):
        list_events(tmp_path)


def test_submission_round_trip(sample, tmp_path):
    hit_id = sample.hits["hit_id"]
    track_id = np.arange(sample.num_hits, dtype=np.int64) // 7
    path = write_submission(1, hit_id, track_id, tmp_path / "subs")
    assert path == tmp_path / "subs" / "event000000001-submission.csv"
    assert path.read_text().splitlines()[:2] == ["event_id,hit_id,track_id", "1,6,0"]
    back = read_submission(path)
    assert back["event_id"].dtype == np.int64 and (back["event_id"] == 1).all()
    assert back["hit_id"].dtype == np.int32 and np.array_equal(back["hit_id"], hit_id)
    assert np.array_equal(back["track_id"], track_id)
    frame = pd.read_csv(path)
    assert list(frame.columns) == ["event_id", "hit_id", "track_id"]


def test_submission_errors(tmp_path):
    with pytest.raises(EventFormatError, match="must be 1-D and of equal length"):
        write_submission(1, np.arange(3), np.arange(4), tmp_path)
    with pytest.raises(EventFormatError, match="track_id: has dtype float64"):
        write_submission(1, np.arange(3), np.array([0.5, 1, 2]), tmp_path)
    bad = tmp_path / "event000000009-submission.csv"
    bad.write_text("event_id,hit_id,track_id\n9,1,0\n9,2,0\n9,1,1\n")
    with pytest.raises(EventFormatError, match=f"{bad}: column 'hit_id' has duplicate id 1"):
        read_submission(bad)
    bad.write_text("event_id,hit,track_id\n9,1,0\n")
    with pytest.raises(EventFormatError, match=r"missing required column\(s\) \['hit_id'\]"):
        read_submission(bad)
    with pytest.raises(EventFormatError, match="no such file"):
        read_submission(tmp_path / "nope.csv")


def test_lazy_exports():
    assert set(events.__all__) >= {"Detector", "simulate_event", "load_event", "Event"}
    with pytest.raises(AttributeError, match="no attribute 'nonsense'"):
        events.nonsense  # noqa: B018


# -- bad input ------------------------------------------------------------------------------
def test_missing_hits_file(tmp_path):
    with pytest.raises(EventFormatError, match=r"event000000004-hits\.csv: no such file"):
        load_event(tmp_path / "event000000004")


def test_missing_requested_part(data_dir, tmp_path):
    prefix = _plain_copy(data_dir, tmp_path)
    Path(f"{prefix}-cells.csv").unlink()
    with pytest.raises(EventFormatError, match=r"event000000001-cells\.csv: no such file"):
        load_event(prefix)
    assert load_event(prefix, parts=("hits", "particles", "truth")).cells is None


def test_prefix_without_event_number(tmp_path):
    with pytest.raises(EventFormatError, match="not a TrackML event prefix"):
        load_event(tmp_path / "hits")
    with pytest.raises(EventFormatError, match="without the '-part.csv' ending"):
        load_event(tmp_path / "event000000001-hits.csv")


def test_renamed_required_column(data_dir, tmp_path):
    prefix = _plain_copy(data_dir, tmp_path)
    _edit_line(Path(f"{prefix}-hits.csv"), 1, "hit_id,X,y,z,volume_id,layer_id,module_id")
    with pytest.raises(
        EventFormatError,
        match=r"event000000001-hits\.csv: missing required column\(s\) \['x'\].*unexpected column\(s\) \['X'\]",
    ):
        load_event(prefix)


def test_extra_unknown_column_is_dropped(data_dir, tmp_path, caplog):
    prefix = _plain_copy(data_dir, tmp_path)
    frame = pd.read_csv(f"{prefix}-hits.csv")
    frame.insert(0, "Unnamed: 0", np.arange(len(frame)))
    frame["charge"] = "q"
    frame.to_csv(f"{prefix}-hits.csv", index=False)
    with caplog.at_level(logging.WARNING, logger="trkx_ray.events.io"):
        event = load_event(prefix)
    assert list(event.hits) == list(SCHEMAS["hits"])
    assert "ignoring unknown column(s) ['Unnamed: 0', 'charge']" in caplog.text


def test_duplicate_header_column(data_dir, tmp_path):
    prefix = _plain_copy(data_dir, tmp_path)
    _edit_line(Path(f"{prefix}-hits.csv"), 1, "hit_id,x,x,z,volume_id,layer_id,module_id")
    with pytest.raises(EventFormatError, match="column 'x' appears twice"):
        load_event(prefix)


@pytest.mark.parametrize(
    ("part", "line", "text", "message"),
    [
        ("hits", 5, "20,1.0,abc,3.0,7,2,1", r"column 'y' at line 5: .*invalid value 'abc'"),
        ("hits", 9, "3000000000,1,2,3,7,2,1", r"column 'hit_id' at line 9: .*int32"),
        ("truth", 4, "20,1.5,1,2,3,4,5,6,0.1", r"column 'particle_id' at line 4: .*'1\.5'"),
        ("particles", 3, "1,2,3,4,5,6,7,8,x,10", r"column 'q' at line 3"),
    ],
)
def test_mistyped_column(data_dir, tmp_path, part, line, text, message):
    prefix = _plain_copy(data_dir, tmp_path)
    _edit_line(Path(f"{prefix}-{part}.csv"), line, text)
    with pytest.raises(EventFormatError, match=rf"event000000001-{part}\.csv: {message}"):
        load_event(prefix)


def test_wrong_field_count(data_dir, tmp_path):
    prefix = _plain_copy(data_dir, tmp_path)
    _edit_line(Path(f"{prefix}-hits.csv"), 7, "20,1.0,2.0")
    with pytest.raises(
        EventFormatError, match=r"hits\.csv: line 7 has the wrong number of fields \(expected 7\)"
    ):
        load_event(prefix)


def test_wrong_field_count_and_mistyped_value_in_gzip(data_dir, tmp_path):
    """The diagnosis reads the parsed table the same way for compressed files; the first
    row with a wrong field count is named before any mistyped value."""
    prefix = _plain_copy(data_dir, tmp_path)
    path = Path(f"{prefix}-hits.csv")
    _edit_line(path, 4, "20,1.0,zz,3.0,7,2,1")
    _edit_line(path, 9, "20,1.0")
    gz = Path(f"{path}.gz")
    gz.write_bytes(gzip.compress(path.read_bytes()))
    path.unlink()
    with pytest.raises(EventFormatError, match=r"hits\.csv\.gz: line 9 has the wrong number"):
        load_event(prefix)
    lines = gzip.decompress(gz.read_bytes()).decode().splitlines()
    lines[8] = lines[9]
    gz.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    with pytest.raises(EventFormatError,
                       match=r"hits\.csv\.gz: column 'y' at line 4: invalid value 'zz' for float"):
        load_event(prefix)


def test_non_utf8_line_is_named(data_dir, tmp_path):
    prefix = _plain_copy(data_dir, tmp_path)
    path = Path(f"{prefix}-hits.csv")
    raw = path.read_bytes().split(b"\n")
    raw[5] = b"20,1.0,\xff\xfe,3.0,7,2,1"
    path.write_bytes(b"\n".join(raw))
    with pytest.raises(EventFormatError, match=r"hits\.csv: line 6 is not UTF-8 text"):
        load_event(prefix)


def test_empty_value(data_dir, tmp_path):
    prefix = _plain_copy(data_dir, tmp_path)
    _edit_line(Path(f"{prefix}-truth.csv"), 12, "20,0,1,2,3,4,5,6,")
    with pytest.raises(
        EventFormatError, match=r"truth\.csv: column 'weight' has an empty value at line 12"
    ):
        load_event(prefix)


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz", ".parquet"])
def test_empty_file(data_dir, tmp_path, suffix):
    prefix = _plain_copy(data_dir, tmp_path)
    Path(f"{prefix}-hits.csv").unlink()
    Path(f"{prefix}-hits{suffix}").write_bytes(b"")
    with pytest.raises(EventFormatError, match=rf"hits{suffix}: file is empty \(0 bytes\)"):
        load_event(prefix)


def test_gzip_of_nothing(tmp_path):
    (tmp_path / "event000000001-hits.csv.gz").write_bytes(gzip.compress(b""))
    with pytest.raises(EventFormatError, match=r"hits\.csv\.gz: file is empty \(no header row\)"):
        load_event(tmp_path / "event000000001")


@pytest.mark.parametrize("gz", [False, True])
def test_header_only_is_an_empty_event(tmp_path, gz):
    for part in ("hits", "truth"):
        text = (",".join(SCHEMAS[part]) + "\n").encode()
        name = f"event000000003-{part}.csv" + (".gz" if gz else "")
        (tmp_path / name).write_bytes(gzip.compress(text) if gz else text)
    event = load_event(tmp_path / "event000000003", parts=("hits", "truth"))
    assert event.num_hits == 0 and len(event.truth["weight"]) == 0
    assert event.hits["x"].dtype == np.float32 and event.truth["particle_id"].dtype == np.int64


def test_truncated_gzip(data_dir, tmp_path):
    shutil.copy(data_dir / "event000000001-hits.csv.gz", tmp_path)
    path = tmp_path / "event000000001-hits.csv.gz"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(EventFormatError, match=r"hits\.csv\.gz: corrupt or truncated gzip"):
        load_event(tmp_path / "event000000001", parts="hits")


@pytest.mark.parametrize("where", ["middle", "header"])
def test_corrupt_gzip(data_dir, tmp_path, where):
    shutil.copy(data_dir / "event000000001-hits.csv.gz", tmp_path)
    path = tmp_path / "event000000001-hits.csv.gz"
    data = bytearray(path.read_bytes())
    if where == "middle":
        data[len(data) // 3 : len(data) // 3 + 64] = b"\xff" * 64
    else:
        data[:4] = b"hit_"
    path.write_bytes(bytes(data))
    with pytest.raises(EventFormatError, match=r"hits\.csv\.gz: "):
        load_event(tmp_path / "event000000001", parts="hits")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("20,nan,2,3,7,2,1", r"column 'x' has a non-finite value \(nan\) at row 3 \(hit_id 20\)"),
        ("20,1,inf,3,7,2,1", r"column 'y' has a non-finite value \(inf\) at row 3 \(hit_id 20\)"),
        ("20,1,2,-inf,7,2,1", r"column 'z' has a non-finite value \(-inf\) at row 3"),
    ],
)
def test_non_finite_coordinates(data_dir, tmp_path, text, message):
    prefix = _plain_copy(data_dir, tmp_path)
    _edit_line(Path(f"{prefix}-hits.csv"), 5, text)
    _edit_line(Path(f"{prefix}-truth.csv"), 5, "20,0,1,2,3,4,5,6,0")
    with pytest.raises(EventFormatError, match=rf"hits\.csv: {message}"):
        load_event(prefix)


def test_duplicate_hit_ids(data_dir, tmp_path):
    prefix = _plain_copy(data_dir, tmp_path)
    lines = Path(f"{prefix}-hits.csv").read_text().splitlines()
    _edit_line(Path(f"{prefix}-hits.csv"), 3, lines[1])
    with pytest.raises(EventFormatError, match=r"hits\.csv: column 'hit_id' has duplicate id 6"):
        load_event(prefix, parts="hits")


def test_negative_hit_id(data_dir, tmp_path):
    prefix = _plain_copy(data_dir, tmp_path)
    _edit_line(Path(f"{prefix}-hits.csv"), 4, "-5,1,2,3,7,2,1")
    with pytest.raises(
        EventFormatError, match=r"hits\.csv: column 'hit_id' has a negative id -5 at row 2"
    ):
        load_event(prefix, parts="hits")


def test_truth_row_for_unknown_hit(data_dir, tmp_path):
    prefix = _plain_copy(data_dir, tmp_path)
    _edit_line(Path(f"{prefix}-truth.csv"), 6, "777777,0,1,2,3,4,5,6,0")
    with pytest.raises(
        EventFormatError, match=r"truth\.csv: line 6 is for hit_id 777777, which is not in the hits"
    ):
        load_event(prefix)


def test_truth_missing_rows(data_dir, tmp_path):
    prefix = _plain_copy(data_dir, tmp_path)
    path = Path(f"{prefix}-truth.csv")
    lines = path.read_text().splitlines()
    missing = lines[10].split(",")[0]
    path.write_text("\n".join(lines[:10] + lines[12:]) + "\n")
    with pytest.raises(
        EventFormatError,
        match=rf"truth\.csv: has no row for 2 hit\(s\), the first being hit_id {missing}",
    ):
        load_event(prefix)


def test_truth_duplicate_rows(data_dir, tmp_path):
    prefix = _plain_copy(data_dir, tmp_path)
    path = Path(f"{prefix}-truth.csv")
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines + [lines[1]]) + "\n")
    with pytest.raises(EventFormatError, match=r"truth\.csv: has 2 rows for hit_id 6"):
        load_event(prefix)


def test_cells_for_unknown_hit(data_dir, tmp_path):
    prefix = _plain_copy(data_dir, tmp_path)
    _edit_line(Path(f"{prefix}-cells.csv"), 8, "888888,1,2,0.5")
    with pytest.raises(EventFormatError, match=r"cells\.csv: row 6 is for unknown hit_id 888888"):
        load_event(prefix)


def test_corrupt_parquet(sample, tmp_path):
    (path,) = [p for p in write_event(sample, tmp_path, format="parquet") if "truth" in p.name]
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(EventFormatError, match=r"truth\.parquet: cannot read Parquet file"):
        load_event(tmp_path / "event000000001")


def test_parquet_with_wrong_column_type(sample, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({**sample.hits, "x": pa.array(sample.hits["x"].astype(str))})
    pq.write_table(table, tmp_path / "event000000001-hits.parquet")
    with pytest.raises(EventFormatError, match=r"hits\.parquet: column 'x' has type string"):
        load_event(tmp_path / "event000000001", parts="hits")
    table = pa.table({**sample.hits, "hit_id": sample.hits["hit_id"].astype(np.int64)})
    pq.write_table(table, tmp_path / "event000000001-hits.parquet")
    event = load_event(tmp_path / "event000000001", parts="hits")  # lossless cast is fine
    assert event.hits["hit_id"].dtype == np.int32


def test_only_event_format_errors_escape(data_dir, tmp_path):
    """Cut / scrambled files fail with EventFormatError (or load), never anything else."""
    source = (data_dir / "event000000001-truth.csv.gz").read_bytes()
    plain = gzip.decompress(source)
    shutil.copy(data_dir / "event000000001-hits.csv.gz", tmp_path)
    rng = np.random.default_rng(1)
    variants = [source[:n] for n in (10, 100, 5000)] + [plain[:n] for n in (5, 40, 3000)]
    for _ in range(12):
        data = bytearray(plain if rng.random() < 0.5 else source)
        pos = rng.integers(0, len(data), size=8)
        for p in pos:
            data[p] = int(rng.integers(0, 256))
        variants.append(bytes(data))
    for i, data in enumerate(variants):
        name = "event000000001-truth.csv" + (".gz" if data[:2] == b"\x1f\x8b" else "")
        for old in tmp_path.glob("event000000001-truth.*"):
            old.unlink()
        (tmp_path / name).write_bytes(data)
        try:
            load_event(tmp_path / "event000000001", parts=("hits", "truth"))
        except EventFormatError as exc:
            assert "truth.csv" in str(exc), (i, str(exc))
