"""``bench memory`` runs the real video job per clip in a child process and reports its peak RSS."""
import json

from click.testing import CliRunner

from archive_restore.cli import cli


def test_bench_memory_reports_each_clips_peak(tmp_path, tiny_models):
    out = tmp_path / "memory.json"
    result = CliRunner().invoke(cli, ["bench", "memory", "--seconds", "0.2", "--seconds", "0.6", "--width", "32",
                                      "--height", "24", "--scale", "1", "--models-dir", str(tiny_models),
                                      "--photo", "40x30", "--json", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert [c["frames"] for c in data["clips"]] == [5, 15]
    assert all(c["peak_rss_mb"] > 50 and c["wall_s"] > 0 for c in data["clips"])  # a Python + torch process
    ratio = data["clips"][1]["peak_rss_mb"] / data["clips"][0]["peak_rss_mb"]
    assert data["longest_over_shortest"] == round(ratio, 3)
    assert "peak RSS of the last clip / the first" in result.output
    assert data["photo"]["width"] == 40 and data["photo"]["height"] == 30 and data["photo"]["peak_rss_mb"] > 50
    assert "one 40x30 photo through the photo job: peak RSS" in result.output


def test_bench_memory_photo_size_must_be_width_x_height():
    result = CliRunner().invoke(cli, ["bench", "memory", "--photo", "4k"])
    assert result.exit_code == 2 and "give WIDTHxHEIGHT" in result.output

