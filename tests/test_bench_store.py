"""``bench scale --store N``: the job store's figures at N generated photos, through the command."""
from __future__ import annotations

import json

from click.testing import CliRunner

from archive_restore.cli import cli


def test_bench_store_runs_a_real_job_of_n_photos_and_prints_its_figures(tmp_path):
    result = CliRunner().invoke(cli, ["bench", "scale", "--store", "60", "--store", "30", "--json",
                                      str(tmp_path / "store.json")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "store.json").read_text())["rows"]
    assert [r["photos"] for r in rows] == [30, 60] and [r["done"] for r in rows] == [30, 60]
    for r in rows:
        assert r["open_s"] > 0 and r["reopen_s"] > 0 and r["ms_per_item"] > 0 and r["db_mb"] > 0
        assert r["status_s"] > 0 and r["jobs_s"] > 0 and r["last_tenth_ms"] > 0
    table = result.stdout.splitlines()
    assert table[1].split()[:2] == ["photos", "open"] and table[2].split()[0] == "30" and table[3].split()[0] == "60"
