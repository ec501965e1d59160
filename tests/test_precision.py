"""``pipeline.precision``: a job keeps the precision it first ran with on the same machine, and says what
changed and why anywhere else."""
from __future__ import annotations

import json

import pytest

from archive_restore.errors import UsageError
from archive_restore.pipeline import precision
from archive_restore.pipeline.engine import EngineOptions


class FakeEngine:
    def __init__(self, options: EngineOptions, chosen: dict):
        self.options = options
        runtime = options.upscaler_runtime if options.upscaler_runtime != "auto" else chosen["upscaler_runtime"]
        faithful = options.faithful if options.faithful != "auto" else chosen["faithful"]
        if options.precision == "fp32":
            runtime, faithful = "channels-last", "fp32"
        self._precisions = {"upscaler_runtime": runtime, "faithful": faithful}

    def precisions(self) -> dict:
        return self._precisions


@pytest.fixture
def machine(monkeypatch):
    here = {"id": "cpu A [amx_bf16] torch 2"}
    monkeypatch.setattr(precision, "machine_id", lambda device: here["id"])
    return here


def _engine(job_dir, options, chosen, made=None):
    said = []

    def make(o):
        if made is not None:
            made.append(o)
        return FakeEngine(o, chosen)

    return precision.job_engine(options, job_dir, said.append, make), said


def test_the_first_run_records_and_later_runs_here_use_it(tmp_path, machine):
    first, said = _engine(tmp_path, EngineOptions(), {"upscaler_runtime": "bf16", "faithful": "bf16"})
    assert said == [] and json.loads((tmp_path / precision.PIN_FILE).read_text()) == {
        "machine": machine["id"], "upscaler_runtime": "bf16", "faithful": "bf16"}
    made = []
    later, said = _engine(tmp_path, EngineOptions(), {"upscaler_runtime": "onnxruntime", "faithful": "fp32"}, made)
    assert later.precisions() == first.precisions() and said == []
    assert (made[0].upscaler_runtime, made[0].faithful) == ("bf16", "bf16")  # asked for by name, not measured


def test_another_machine_or_fp32_chooses_anew_and_says_why(tmp_path, machine):
    _engine(tmp_path, EngineOptions(), {"upscaler_runtime": "bf16", "faithful": "bf16"})
    machine["id"] = "cpu B [avx2] torch 2"
    engine, said = _engine(tmp_path, EngineOptions(), {"upscaler_runtime": "onnxruntime", "faithful": "fp32"})
    assert engine.precisions() == {"upscaler_runtime": "onnxruntime", "faithful": "fp32"}
    (line,) = said
    assert "first ran with upscaler runtime bf16, faithful branch bf16" in line
    assert "now runs with upscaler runtime onnxruntime, faithful branch fp32" in line
    assert "this machine (cpu B [avx2] torch 2) is not the one it first ran on (cpu A [amx_bf16] torch 2)" in line
    machine["id"] = "cpu A [amx_bf16] torch 2"
    _, said = _engine(tmp_path, EngineOptions(precision="fp32"), {"upscaler_runtime": "bf16", "faithful": "bf16"})
    assert len(said) == 1 and "--precision fp32 was asked for" in said[0]
    assert json.loads((tmp_path / precision.PIN_FILE).read_text())["upscaler_runtime"] == "bf16"  # the first kept


def test_a_recorded_runtime_that_cannot_run_now_is_chosen_again(tmp_path, machine):
    _engine(tmp_path, EngineOptions(), {"upscaler_runtime": "ncnn", "faithful": "bf16"})
    said = []

    def make(o):
        if o.upscaler_runtime == "ncnn":
            raise UsageError("upscaler runtime ncnn: the ncnn package is not installed")
        return FakeEngine(o, {"upscaler_runtime": "channels-last", "faithful": "bf16"})

    engine = precision.job_engine(EngineOptions(), tmp_path, said.append, make)
    assert engine.precisions()["upscaler_runtime"] == "channels-last"
    (line,) = said
    assert "recorded precision (upscaler runtime ncnn, faithful branch bf16) cannot be used now" in line
    assert "the ncnn package is not installed" in line


def test_a_damaged_record_is_ignored(tmp_path, machine):
    (tmp_path / precision.PIN_FILE).write_text("{not json")
    engine, said = _engine(tmp_path, EngineOptions(), {"upscaler_runtime": "torch", "faithful": "fp32"})
    assert said == [] and json.loads((tmp_path / precision.PIN_FILE).read_text())["upscaler_runtime"] == "torch"


def test_a_recorded_runtime_is_asked_for_as_the_jobs_own(tmp_path, machine):
    """Built from the record, the engine is told so: the runtime is not timed again (``runtime.build``)."""
    _engine(tmp_path, EngineOptions(), {"upscaler_runtime": "bf16", "faithful": "bf16"})
    made = []
    _engine(tmp_path, EngineOptions(), {"upscaler_runtime": "bf16", "faithful": "bf16"}, made)
    assert made[0].runtime_recorded and made[0].upscaler_runtime == "bf16"
    assert not EngineOptions().runtime_recorded


def test_a_recorded_reduced_precision_is_not_timed_again_under_load(monkeypatch):
    """The lost-worker bug (issue 33): a replacement Ray worker, started while the machine was busy, timed bf16
    as no faster than fp32, refused the job's recorded bf16, chose again, and every photo it restored differed.
    A recorded reduced precision is used as recorded; what cannot run at all is still refused."""
    import torch

    from archive_restore.compute import cpu
    from archive_restore.nets.realesrgan import SRVGGNetCompact
    from archive_restore.upscalers import runtime

    monkeypatch.setattr(cpu, "half_speedups", lambda: {torch.bfloat16: 1.0, torch.float16: 0.01})  # a busy moment
    model, weights = SRVGGNetCompact(2, 8, 4).eval(), runtime.Weights(None, "0" * 64)
    with pytest.raises(UsageError, match="no fast bf16"):
        runtime.build("bf16", model, weights)
    assert runtime.build("bf16", model, weights, recorded=True).name == "bf16"
    monkeypatch.setattr(runtime, "missing", lambda name, w: "the ncnn package is not installed")
    with pytest.raises(UsageError, match="not installed"):
        runtime.build("ncnn", model, weights, recorded=True)
