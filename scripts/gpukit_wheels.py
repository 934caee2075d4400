#!/usr/bin/env python3
"""Wheel tools of the GPU kit (``scripts/gpu_kit.sh``): slim, verify, list requirements.

Standard library only, so it runs on the GPU machine's bare Python as well as here.

* ``slim``: copy a wheel without the files under some path prefixes (Ray's Java jar,
  rllib, the dashboard's web client) and rewrite its ``RECORD`` so that pip accepts
  the result: the lines of the dropped files go, every kept file keeps its line
  (contents are copied byte for byte, so their sha256 digests stay valid), file
  modes (the executable bits of Ray's ``gcs_server`` and ``raylet``) are kept.
* ``verify``: check that every file of a wheel is listed in ``RECORD`` with the
  right sha256 and size, and every listed file exists (what ``pip install`` checks).
* ``requires``: the unconditional ``Requires-Dist`` names of wheels (no extras).
* ``manifest``: write ``KIT/MANIFEST.json`` listing the kit's wheels (project name,
  version, sha256, bytes): ``KIT/*.whl`` are installed on the GPU machine always,
  ``KIT/fallback/*.whl`` only where its image lacks the project.

Usage::

    python scripts/gpukit_wheels.py slim SRC.whl OUTDIR --drop ray/jars/ --drop ray/rllib/
    python scripts/gpukit_wheels.py verify A.whl B.whl
    python scripts/gpukit_wheels.py requires A.whl B.whl
    python scripts/gpukit_wheels.py manifest KIT [--note TEXT]
"""

from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import io
import json
import re
import sys
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path

__all__ = [
    "RAY_DROP",
    "WheelError",
    "dist_info_dir",
    "wheel_metadata",
    "write_manifest",
    "record_digest",
    "requires_dist",
    "slim_wheel",
    "verify_wheel",
]

#: Path prefixes dropped from the Ray wheel: the Java jar (32 MB of the 79 MB wheel),
#: RLlib and the dashboard's prebuilt web client. Nothing the kit runs imports them.
RAY_DROP: tuple[str, ...] = (
    "ray/jars/",
    "ray/rllib/",
    "ray/dashboard/client/build/",
)


class WheelError(ValueError):
    """A wheel is malformed or its RECORD does not match its files (names the wheel)."""


def record_digest(data: bytes) -> str:
    """The ``sha256=...`` digest of ``data`` in RECORD's form (urlsafe base64, no padding)."""
    digest = hashlib.sha256(data).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def dist_info_dir(names: Iterable[str], wheel: str | Path = "?") -> str:
    """The wheel's ``NAME-VERSION.dist-info`` folder (with trailing ``/``)."""
    found = sorted({n.split("/", 1)[0] + "/" for n in names if n.split("/", 1)[0].endswith(
        ".dist-info")})
    if len(found) != 1:
        raise WheelError(f"{wheel}: expected one .dist-info folder, found {found}")
    return found[0]


def _parse_record(text: str) -> list[list[str]]:
    return [row for row in csv.reader(io.StringIO(text)) if row]


def _write_record(rows: Sequence[Sequence[str]]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    for row in rows:
        writer.writerow(row)
    return buf.getvalue().encode("utf-8")


def slim_wheel(
    src: str | Path,
    out_dir: str | Path,
    drop: Sequence[str],
    *,
    compresslevel: int = 6,
) -> tuple[Path, dict[str, int]]:
    """Copy wheel ``src`` into ``out_dir`` (same file name) without the files under ``drop``.

    Args:
        src: the wheel.
        out_dir: output folder (created); must not be ``src``'s folder.
        drop: path prefixes inside the wheel, e.g. ``"ray/jars/"``; a prefix that
            matches nothing is an error (the wheel's layout changed: look again).
        compresslevel: deflate level of the new archive.

    Returns:
        ``(path of the new wheel, {prefix: bytes dropped (uncompressed)})``.

    Raises:
        WheelError: no RECORD, a prefix inside ``.dist-info``, or a prefix matching nothing.
    """
    src = Path(src)
    out_dir = Path(out_dir)
    if out_dir.resolve() == src.parent.resolve():
        raise WheelError(f"{src}: the output folder must differ from the wheel's own folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    dst = out_dir / src.name
    dropped = dict.fromkeys(drop, 0)
    with zipfile.ZipFile(src) as zin:
        infos = zin.infolist()
        dist = dist_info_dir((i.filename for i in infos), src)
        record_name = dist + "RECORD"
        if record_name not in zin.namelist():
            raise WheelError(f"{src}: no {record_name}")
        for prefix in drop:
            if prefix.startswith(dist):
                raise WheelError(f"{src}: refusing to drop metadata {prefix!r}")

        def dropped_by(name: str) -> str | None:
            return next((p for p in drop if name.startswith(p)), None)

        rows = _parse_record(zin.read(record_name).decode("utf-8"))
        kept_rows = [r for r in rows if dropped_by(r[0]) is None]
        tmp = dst.with_name(dst.name + ".part")
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=compresslevel) as zout:
            for info in infos:
                prefix = dropped_by(info.filename)
                if prefix is not None:
                    dropped[prefix] += info.file_size
                    continue
                if info.filename == record_name:
                    continue  # written last
                new = zipfile.ZipInfo(info.filename, date_time=info.date_time)
                new.external_attr = info.external_attr
                new.create_system = info.create_system
                new.compress_type = zipfile.ZIP_DEFLATED
                with zin.open(info) as fh:
                    zout.writestr(new, fh.read(), compresslevel=compresslevel)
            rec = zipfile.ZipInfo(record_name, date_time=(1980, 1, 1, 0, 0, 0))
            rec.external_attr = 0o644 << 16
            rec.compress_type = zipfile.ZIP_DEFLATED
            zout.writestr(rec, _write_record(kept_rows))
    missing = [p for p, n in dropped.items() if n == 0 and not any(
        i.filename.startswith(p) for i in infos)]
    if missing:
        tmp.unlink(missing_ok=True)
        raise WheelError(f"{src}: drop prefix(es) {missing} match no file in the wheel")
    tmp.replace(dst)
    return dst, dropped


def verify_wheel(path: str | Path) -> int:
    """Check ``path``'s RECORD against its files like pip does.

    Returns:
        The number of files checked.

    Raises:
        WheelError: a file missing from RECORD, a RECORD line for a missing file,
            or a wrong sha256 / size (the message names wheel and file).
    """
    path = Path(path)
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise WheelError(f"{path}: not a zip archive ({exc})") from exc
    with zf:
        names = [n for n in zf.namelist() if not n.endswith("/")]
        dist = dist_info_dir(names, path)
        record_name = dist + "RECORD"
        if record_name not in names:
            raise WheelError(f"{path}: no {record_name}")
        rows = {r[0]: r for r in _parse_record(zf.read(record_name).decode("utf-8"))}
        unlisted = sorted(set(names) - set(rows))
        if unlisted:
            raise WheelError(f"{path}: {len(unlisted)} file(s) not in RECORD, e.g. {unlisted[:3]}")
        absent = sorted(set(rows) - set(names))
        if absent:
            raise WheelError(f"{path}: RECORD lists {len(absent)} absent file(s), e.g. {absent[:3]}")
        checked = 0
        for name in names:
            row = rows[name]
            if name == record_name or (len(row) > 1 and not row[1]):
                continue  # RECORD itself (and signature files) carry no hash
            if len(row) < 3:
                raise WheelError(f"{path}: RECORD line for {name} lacks hash or size: {row}")
            data = zf.read(name)
            if record_digest(data) != row[1]:
                raise WheelError(f"{path}: sha256 of {name} does not match RECORD")
            if row[2] and int(row[2]) != len(data):
                raise WheelError(f"{path}: size of {name} is {len(data)}, RECORD says {row[2]}")
            checked += 1
    return checked


_REQ_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def requires_dist(path: str | Path) -> list[str]:
    """Unconditional requirements (``Requires-Dist`` without ``extra ==``) of a wheel.

    Returns:
        The requirement strings as written in METADATA (markers other than extras kept).
    """
    with zipfile.ZipFile(path) as zf:
        dist = dist_info_dir(zf.namelist(), path)
        meta = zf.read(dist + "METADATA").decode("utf-8")
    out = []
    for line in meta.splitlines():
        if not line.startswith("Requires-Dist:"):
            continue
        req = line.split(":", 1)[1].strip()
        if "extra ==" in req.replace("extra==", "extra =="):
            continue
        out.append(req)
    return out


def requirement_name(req: str) -> str:
    """The normalised project name of a requirement string (PEP 503)."""
    m = _REQ_NAME.match(req)
    if not m:
        raise WheelError(f"cannot read a project name from requirement {req!r}")
    return re.sub(r"[-_.]+", "-", m.group(1)).lower()


def wheel_metadata(path: str | Path) -> dict[str, str]:
    """``{"name": normalised project name, "version": ...}`` from a wheel's METADATA."""
    with zipfile.ZipFile(path) as zf:
        dist = dist_info_dir(zf.namelist(), path)
        meta = zf.read(dist + "METADATA").decode("utf-8")
    fields: dict[str, str] = {}
    for line in meta.splitlines():
        if not line.strip():
            break  # end of the headers
        key, _, value = line.partition(":")
        if key in ("Name", "Version") and key.lower() not in fields:
            fields[key.lower()] = value.strip()
    if "name" not in fields or "version" not in fields:
        raise WheelError(f"{path}: METADATA lacks Name or Version")
    fields["name"] = requirement_name(fields["name"])
    return fields


def write_manifest(kit: str | Path, note: str = "", python: str = "3.12") -> Path:
    """Write ``kit/MANIFEST.json`` describing ``kit/*.whl`` and ``kit/fallback/*.whl``.

    ``python`` is the CPython version (``X.Y``) the wheels were downloaded for.

    Raises:
        WheelError: two wheels of one project (pip would refuse to install both).
    """
    kit = Path(kit)
    out: dict[str, object] = {"note": note, "python": python, "required": [], "fallback": []}
    seen: dict[str, str] = {}
    for group, folder in (("required", kit), ("fallback", kit / "fallback")):
        rows = []
        for whl in sorted(folder.glob("*.whl")):
            meta = wheel_metadata(whl)
            if meta["name"] in seen:
                raise WheelError(f"{kit}: two wheels of {meta['name']}: {seen[meta['name']]} "
                                 f"and {whl.name}")
            seen[meta["name"]] = whl.name
            data = whl.read_bytes()
            rows.append({
                "file": str(whl.relative_to(kit)),
                **meta,
                "sha256": hashlib.sha256(data).hexdigest(),
                "bytes": len(data),
            })
        out[group] = rows
    out["total_bytes"] = sum(int(r["bytes"]) for g in ("required", "fallback")
                             for r in out[g])  # type: ignore[attr-defined]
    path = kit / "MANIFEST.json"
    path.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status."""
    p = argparse.ArgumentParser(prog="gpukit_wheels.py", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("slim", help="copy a wheel without some path prefixes, RECORD fixed")
    s.add_argument("src", type=Path)
    s.add_argument("out_dir", type=Path)
    s.add_argument("--drop", action="append", default=None,
                   help="path prefix inside the wheel (repeatable; default: Ray's RAY_DROP)")
    v = sub.add_parser("verify", help="check wheels' RECORD like pip")
    v.add_argument("wheels", type=Path, nargs="+")
    r = sub.add_parser("requires", help="unconditional Requires-Dist of wheels")
    r.add_argument("wheels", type=Path, nargs="+")
    m = sub.add_parser("manifest", help="write KIT/MANIFEST.json")
    m.add_argument("kit", type=Path)
    m.add_argument("--note", default="")
    m.add_argument("--python", default="3.12", help="CPython X.Y the wheels are for")
    args = p.parse_args(argv)
    try:
        if args.cmd == "slim":
            dst, dropped = slim_wheel(args.src, args.out_dir, args.drop or list(RAY_DROP))
            verify_wheel(dst)
            saved = ", ".join(f"{k} {v / 2**20:.1f} MiB" for k, v in dropped.items())
            print(f"{dst}: {args.src.stat().st_size / 2**20:.1f} MiB -> "
                  f"{dst.stat().st_size / 2**20:.1f} MiB (dropped {saved})")
        elif args.cmd == "manifest":
            path = write_manifest(args.kit, args.note, args.python)
            print(f"{path}: {json.loads(path.read_text())['total_bytes'] / 2**20:.1f} MiB of wheels")
        elif args.cmd == "verify":
            for w in args.wheels:
                print(f"{w}: RECORD ok ({verify_wheel(w)} files)")
        else:
            for w in args.wheels:
                for req in requires_dist(w):
                    print(f"{w.name}\t{requirement_name(req)}\t{req}")
    except (WheelError, OSError, zipfile.BadZipFile) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
