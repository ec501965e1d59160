"""``bench eta``: the render bar's remaining time against the truth, on a video job the test makes."""
from __future__ import annotations

from click.testing import CliRunner
from video_clips import make_clip

from archive_restore.bench.eta import EtaResult, RecordingBar
from archive_restore.cli import cli


def test_the_recording_bar_keeps_what_it_shows():
    bar = RecordingBar(total=10, initial=2)
    bar.update(3)
    bar.update(5)
    (_, n1, left1), (_, n2, left2) = bar.seen
    assert (n1, n2) == (5, 10) and left1 > 0 and left2 == 0


def test_ratios_and_the_verdict():
    met = EtaResult(10, 9.0, [(0.1, 9.0, 8.0), (0.5, 4.0, 4.4)])
    assert met.ratios() == [9.0 / 8.0, 4.0 / 4.4] and "is met" in met.lines()[-1]
    missed = EtaResult(10, 9.0, [(0.1, 20.0, 8.0)])
    assert "NOT met" in missed.lines()[-1] and "2.500" in missed.lines()[-1]


def test_bench_eta_runs_the_video_job_and_compares(tmp_path, tiny_models):
    clip = make_clip(tmp_path / "f.mp4", count=12)
    result = CliRunner().invoke(cli, ["bench", "eta", str(clip.path), "--frames", "12", "--device", "cpu",
                                      "--models-dir", str(tiny_models)])
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if line.strip().endswith(tuple("0123456789")) and "%" in line]
    assert rows, result.output
    assert "12 frames rendered" in result.output and "x the truth" in result.output


def test_the_render_bar_exists_before_the_first_frame_is_rendered(tmp_path, tiny_models, monkeypatch):
    """The bar made after the first batch took its first rate from a near-zero time: its remaining time read
    0 s at the first update and about half the truth after (bench eta on a real clip). Made when the chunk
    starts, its clock includes the first batch."""
    from archive_restore.pipeline import video

    made, restored = [], []
    restore = video.VideoJob.restore

    def counted(self, batch, code, cleanup=None):
        restored.append(len(batch))
        return restore(self, batch, code, cleanup)

    class Bar(RecordingBar):
        def __init__(self, *args, **kwargs):
            made.append(len(restored))  # batches restored before the bar existed
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(video.VideoJob, "restore", counted)
    monkeypatch.setattr(video.VideoJob, "bar_class", Bar)
    clip = make_clip(tmp_path / "f.mp4", count=6)
    result = CliRunner().invoke(cli, ["video", str(clip.path), "--batch", "2", "--device", "cpu", "--face-detector",
                                      "haar", "--models-dir", str(tiny_models), "--jobs-dir", str(tmp_path / "j")])
    assert result.exit_code == 0, result.output
    assert made == [0] and restored == [2, 2, 2]
