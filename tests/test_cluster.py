"""A real two-node Ray cluster on this machine runs ``ray job submit`` of trkx_ray.run.

Head and worker node are started by scripts/local_cluster.sh (1 CPU each, small object
stores, their own ports and temp folders) and stopped by it in ``finally`` (only
those nodes' processes, never a machine-wide ``ray stop``).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.ray]

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "local_cluster.sh"
RAY_CLI = Path(sys.executable).parent / "ray"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture()
def cluster():
    """Start head + worker node; yield their settings; always stop both."""
    if not RAY_CLI.exists():
        pytest.skip(f"no ray CLI next to {sys.executable}")
    state = Path(tempfile.mkdtemp(prefix="trkx_c_", dir="/tmp"))  # short: socket paths
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    env.update(PORT=str(_free_port()), DASHBOARD_PORT=str(_free_port()), CLUSTER_DIR=str(state),
               RAY=str(RAY_CLI), RAY_AUTH_MODE="token")
    try:
        start = subprocess.run(["bash", str(SCRIPT), "start"], env=env, capture_output=True,
                               text=True, timeout=180)
        assert start.returncode == 0, start.stderr[-3000:]
        yield env
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop"], env=env, capture_output=True, timeout=120)
        left = subprocess.run(["pgrep", "-f", str(state)], capture_output=True, text=True)
        shutil.rmtree(state, ignore_errors=True)
        assert not left.stdout.strip(), f"cluster processes left: {left.stdout}"


def test_job_submit_spreads_actors_over_both_nodes(cluster, tmp_path):
    report_path = tmp_path / "report.json"
    cmd = [str(RAY_CLI), "job", "submit", "--address",
           f"http://127.0.0.1:{cluster['DASHBOARD_PORT']}", "--working-dir", str(REPO), "--",
           "python", "-m", "trkx_ray.run", "--config", "noop", "--pileup", "5", "--events", "10",
           "--cpu-actors", "2", "--report", str(report_path)]
    for _ in range(30):  # the head's job agent may need a few seconds more
        job = subprocess.run(cmd, env=cluster, capture_output=True, text=True, timeout=300)
        if "No available agent" not in job.stdout + job.stderr:
            break
        time.sleep(2)
    assert job.returncode == 0, (job.stdout + job.stderr)[-3000:]
    assert "succeeded" in job.stdout + job.stderr
    report = json.loads(report_path.read_text())
    assert report["events_processed"] == 10 and report["events_failed"] == []
    assert report["ray"]["nodes"] == 2 and report["ray"]["embedded"] is False
    actors = report["actors"]
    assert len({a["node"] for a in actors}) == 2, "actors not on both nodes"
    assert sum(a["events"] for a in actors) == 10 and all(a["events"] > 0 for a in actors)
    # two Ray nodes on one machine still get disjoint cores
    assert set(actors[0]["cores"]).isdisjoint(actors[1]["cores"])
