"""The soak, small: ``archive-restore bench soak`` (its real code: child processes, SIGKILLs at seeded
random moments) on 24 photos killed 4 times, then finished. Every photo done once, outputs
byte-identical to an uninterrupted run, no temporary file left, and the figures printed."""
from __future__ import annotations

import json

from click.testing import CliRunner

from archive_restore.cli import cli


def test_killed_again_and_again_then_finished_loses_nothing(tmp_path, tiny_models):
    figures = tmp_path / "soak.json"
    done = CliRunner().invoke(cli, ["bench", "soak", "--photos", "24", "--kills", "4", "--seed", "3", "--quiet",
                                    "--models-dir", str(tiny_models), "--json", str(figures)])
    assert done.exit_code == 0, done.output
    result = json.loads(figures.read_text())
    assert result["kills_landed"] >= 3                   # the kills hit a working job, not a finished one
    assert result["done_once"] and result["extra_attempts"] <= result["kills_landed"]
    assert result["identical"] == 24 and result["missing"] == 0 and result["unexpected"] == 0
    assert result["temps_left"] == 0 and result["passed"]
    assert "byte-identical to the uninterrupted run: 24/24" in done.stdout and "soak: passed" in done.stdout
