"""The stack in the jobs: ``run``/``video``/``resume`` with ``--upscaler`` and ``--fidelity``. The
upscaler file is part of the job's identity (by its sha256), the code steers the pixels through the
cleanup, and a file that changed under a job is refused."""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from spandrel.architectures.Compact import Compact
from video_clips import decoded, make_clip

from archive_restore.cli import cli
from archive_restore.media.image import read_image
from archive_restore.weights.folders import MODEL_FILES
from archive_restore.nets import Cleanup, load_checkpoint, save_checkpoint
from archive_restore.pipeline.stack import stack_restore
from archive_restore.jobs.store import JobStore
from archive_restore.upscalers.upscaler import load_upscaler, resolve_upscaler

torch.set_num_threads(1)


def _invoke(args, jobs: Path, models: Path) -> tuple[int, str]:
    result = CliRunner().invoke(cli, [*map(str, args), "--jobs-dir", str(jobs), "--models-dir", str(models)])
    return result.exit_code, result.output


def _compact(path: Path, seed: int) -> Path:
    """A random-weight SRVGGNetCompact x4 in the official .pth layout."""
    torch.manual_seed(seed)
    torch.save({"params": Compact(num_feat=8, num_conv=2, upscale=4).state_dict()}, path)
    return path


@pytest.fixture
def stack_models(tiny_models, tmp_path) -> Path:
    """``tiny_models`` with a cleanup whose code matters (random weights, tone and tail included)."""
    folder = tmp_path / "models"
    shutil.copytree(tiny_models, folder)
    torch.manual_seed(7)
    cleanup = Cleanup(code_dim=16, width=8, blocks=1)
    with torch.no_grad():
        for p in cleanup.parameters():
            p.add_(0.05 * torch.randn_like(p))
        cleanup.tone.weight.normal_(0, 0.3)  # a global cast set by the code: it must show in the pixels
    save_checkpoint(cleanup, folder / MODEL_FILES["cleanup_compact"])
    return folder


@pytest.fixture
def scans(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    folder = tmp_path / "scans"
    folder.mkdir()
    small = rng.random((6, 8, 3))
    cv2.imwrite(str(folder / "a.png"), (cv2.resize(small, (40, 30), interpolation=cv2.INTER_CUBIC) * 255).astype(np.uint8))
    return folder


def _jobs(jobs: Path) -> list:
    with JobStore.open(jobs) as store:
        return store.jobs()


def test_photo_job_renders_the_stack_with_the_stored_code(tmp_path, stack_models, scans):
    upscaler = _compact(tmp_path / "tiny-x4.pth", 1)
    jobs, out = tmp_path / "jobs", tmp_path / "out"
    code, output = _invoke(["run", scans, "-o", out, "--face-detector", "haar", "--upscaler", upscaler,
                            "--fidelity", "0.4"], jobs, stack_models)
    assert code == 0, output
    assert "upscaler: tiny-x4" in output  # which upscaler is used is said
    (job,) = _jobs(jobs)
    assert job.options["upscaler_sha256"] == hashlib.sha256(upscaler.read_bytes()).hexdigest()
    assert job.options["fidelity"] == 0.4
    with JobStore.open(jobs) as store:
        (item,) = store.items(job.id)
    restored = read_image(out / "a.png").pixels
    lq = torch.from_numpy(read_image(scans / "a.png").pixels).permute(2, 0, 1)[None]
    nets = [load_checkpoint(stack_models / MODEL_FILES[k]).model for k in ("cleanup_compact", "condsr_compact")]
    upscale = load_upscaler(resolve_upscaler(str(upscaler)))

    def expected(z):
        return stack_restore(lq, z, nets[0], upscale, nets[1], 0.4)[0].permute(1, 2, 0).numpy()

    stored = torch.tensor(item.code, dtype=torch.float32)[None]
    assert restored.shape == (120, 160, 3)
    assert np.abs(restored - expected(stored)).max() < 1.5 / 255  # 8-bit output of exactly the stack with its code
    assert np.abs(restored - expected(torch.zeros_like(stored))).mean() > 2 / 255  # the code changed the picture


def test_another_upscaler_or_a_changed_file_is_another_job(tmp_path, stack_models, scans):
    first, second = _compact(tmp_path / "first.pth", 1), _compact(tmp_path / "second.pth", 2)
    jobs, out = tmp_path / "jobs", tmp_path / "out"
    base = ["run", scans, "-o", out, "--face-detector", "haar"]
    assert _invoke([*base, "--upscaler", first], jobs, stack_models)[0] == 0
    assert _invoke([*base, "--upscaler", first], jobs, stack_models)[0] == 0  # the same job again
    assert len(_jobs(jobs)) == 1
    assert _invoke([*base, "--upscaler", second], jobs, stack_models)[0] == 0
    assert len(_jobs(jobs)) == 2
    _compact(first, 3)  # the same path, other weights: another job
    assert _invoke([*base, "--upscaler", first], jobs, stack_models)[0] == 0
    assert len({j.options["upscaler_sha256"] for j in _jobs(jobs)}) == 3


def test_resume_with_another_upscaler_makes_a_new_job(tmp_path, stack_models, scans):
    first, second = _compact(tmp_path / "first.pth", 1), _compact(tmp_path / "second.pth", 2)
    jobs, out = tmp_path / "jobs", tmp_path / "out"
    code, output = _invoke(["run", scans, "-o", out, "--face-detector", "haar", "--upscaler", first], jobs, stack_models)
    assert code == 0, output
    (job,) = _jobs(jobs)
    code, output = _invoke(["resume", job.id, "--upscaler", second], jobs, stack_models)
    assert code == 0, output
    new = [j for j in _jobs(jobs) if j.id != job.id]
    assert len(new) == 1 and new[0].options["upscaler"] == str(second) and f"job {new[0].id}" in output
    code, output = _invoke(["resume", job.id], jobs, stack_models)  # the job's own upscaler: the same job
    assert code == 0 and len(_jobs(jobs)) == 2


def test_a_job_whose_upscaler_file_changed_is_refused_on_resume(tmp_path, stack_models, scans):
    upscaler = _compact(tmp_path / "tiny-x4.pth", 1)
    jobs, out = tmp_path / "jobs", tmp_path / "out"
    assert _invoke(["run", scans, "-o", out, "--face-detector", "haar", "--upscaler", upscaler], jobs, stack_models)[0] == 0
    (job,) = _jobs(jobs)
    shutil.copy(scans / "a.png", scans / "b.png")  # a new photo: the job has work to do again
    _compact(upscaler, 5)
    code, output = _invoke(["resume", job.id], jobs, stack_models)
    assert code == 1
    assert "tiny-x4.pth" in output and "changed" in output


def test_condsr_alone_needs_no_cleanup_and_keeps_the_old_identity(tmp_path, tiny_models, scans):
    jobs, out = tmp_path / "jobs", tmp_path / "out"
    code, output = _invoke(["run", scans, "-o", out, "--face-detector", "haar", "--upscaler", "condsr"], jobs, tiny_models)
    assert code == 0, output
    (job,) = _jobs(jobs)
    assert "upscaler" not in job.options and "fidelity" not in job.options


def test_unknown_upscaler_is_a_clear_error(tmp_path, tiny_models, scans):
    code, output = _invoke(["run", scans, "--upscaler", "no-such-model"], tmp_path / "jobs", tiny_models)
    assert code != 0
    assert "no-such-model" in output
    assert not _jobs(tmp_path / "jobs")


def test_video_job_renders_through_the_stack(tmp_path, stack_models):
    upscaler = _compact(tmp_path / "tiny-x4.pth", 1)
    clip = make_clip(tmp_path / "film.mp4", count=6, width=32, height=24)
    jobs = tmp_path / "jobs"
    code, output = _invoke(["video", clip.path, "--scale", "2", "--preset", "ultrafast", "--face-detector", "haar",
                            "--upscaler", upscaler, "--fidelity", "0"], jobs, stack_models)
    assert code == 0, output
    (job,) = _jobs(jobs)
    assert job.options["upscaler_sha256"] == hashlib.sha256(upscaler.read_bytes()).hexdigest()
    _, _, frames = decoded(tmp_path / "film_restored.mp4")
    _, _, sources = decoded(clip.path)
    assert len(frames) == 6 and frames[0].shape[:2] == (48, 64)
    # fidelity 0: the frames are the upscaler's picture of the cleaned frames, not CondSR's
    with JobStore.open(jobs) as store:
        render = [i for i in store.items(job.id) if i.key.startswith("shot")]
    z = torch.tensor(render[0].code, dtype=torch.float32)[None]
    cleanup = load_checkpoint(stack_models / MODEL_FILES["cleanup_compact"]).model
    lq = torch.from_numpy(sources[0].astype(np.float32) / 255).permute(2, 0, 1)[None]
    expected = stack_restore(lq, z, cleanup, load_upscaler(resolve_upscaler(str(upscaler))), None, 0.0, 2)
    expected = (expected[0].permute(1, 2, 0).numpy() * 255)
    assert np.abs(frames[0].astype(np.float32) - expected).mean() < 6  # x264 at crf 18 on a tiny frame


def test_help_states_the_default_fidelity_the_jobs_use():
    from archive_restore.pipeline.stack import DEFAULT_FIDELITY

    for command in ("run", "video", "resume"):
        text = " ".join(CliRunner().invoke(cli, [command, "--help"]).output.split())
        assert f"default: {DEFAULT_FIDELITY:g}," in text, command


def test_video_resume_with_another_upscaler_makes_a_new_job(tmp_path, stack_models):
    first, second = _compact(tmp_path / "first.pth", 1), _compact(tmp_path / "second.pth", 2)
    clip = make_clip(tmp_path / "film.mp4", count=3, width=16, height=16)
    jobs = tmp_path / "jobs"
    code, output = _invoke(["video", clip.path, "--scale", "1", "--preset", "ultrafast", "--face-detector", "haar",
                            "--upscaler", first], jobs, stack_models)
    assert code == 0, output
    (job,) = _jobs(jobs)
    code, output = _invoke(["resume", job.id, "--upscaler", second], jobs, stack_models)
    assert code == 0, output
    (new,) = [j for j in _jobs(jobs) if j.id != job.id]
    assert new.kind == "video" and new.options["upscaler"] == str(second) and f"job {new.id}" in output


def test_a_resumed_job_keeps_the_precision_it_first_ran_with(tmp_path, stack_models, scans, monkeypatch):
    """A job records what its stack computed in (``precision.json``, with the machine) and a later run on the
    same machine uses exactly that, whatever the machine would choose now: a stopped and resumed job's
    outputs are byte-identical to an uninterrupted one's, with precision ``auto``."""
    from archive_restore.pipeline import engine as engine_module
    from archive_restore.pipeline.photo import PhotoJob
    from archive_restore.pipeline.precision import PIN_FILE
    from archive_restore.upscalers import runtime as rt

    rng = np.random.default_rng(1)
    cv2.imwrite(str(scans / "b.png"), (rng.random((30, 40, 3)) * 255).astype(np.uint8))
    upscaler = _compact(tmp_path / "tiny-x4.pth", 1)
    monkeypatch.setattr(rt, "reduced_missing", lambda name: None)  # bf16 runs on any CPU (fast or not)

    def machine_chooses(runtime: str, faithful):  # what `auto` would measure on this machine now
        monkeypatch.setenv(rt.ENV_VAR, runtime)
        monkeypatch.setattr(engine_module, "faithful_dtype", lambda device: faithful)

    def run(name: str) -> tuple[int, str]:
        return _invoke(["run", scans, "-o", tmp_path / name, "--face-detector", "haar", "--upscaler", upscaler],
                       tmp_path / f"jobs-{name}", stack_models)

    machine_chooses("bf16", torch.bfloat16)
    assert run("whole")[0] == 0
    machine_chooses("torch", None)
    assert run("fp32")[0] == 0
    whole, fp32 = (tmp_path / "whole" / "b.png").read_bytes(), (tmp_path / "fp32" / "b.png").read_bytes()
    assert whole != fp32  # the two choices do change the pixels

    machine_chooses("bf16", torch.bfloat16)
    real, calls = PhotoJob.process, []

    def stopped_after_one(self, item):
        calls.append(item.key)
        if len(calls) == 2:
            raise KeyboardInterrupt  # stopped before the second photo
        return real(self, item)

    monkeypatch.setattr(PhotoJob, "process", stopped_after_one)
    assert run("resumed")[0] != 0 and not (tmp_path / "resumed" / "b.png").exists()
    monkeypatch.setattr(PhotoJob, "process", real)
    machine_chooses("torch", None)  # a new measurement would now choose fp32 throughout
    code, output = run("resumed")
    assert code == 0, output
    assert (tmp_path / "resumed" / "b.png").read_bytes() == whole
    assert (tmp_path / "resumed" / "a.png").read_bytes() == (tmp_path / "whole" / "a.png").read_bytes()
    (job,) = _jobs(tmp_path / "jobs-resumed")
    pin = (tmp_path / "jobs-resumed" / job.id / PIN_FILE).read_text()
    assert '"upscaler_runtime": "bf16"' in pin and '"faithful": "bf16"' in pin and "first ran" not in output


def test_scale_methods_below_the_upscalers_own_scale():
    """``upscale_to``: full runs the upscaler on the whole picture, reduced on the picture shrunk so that its
    x4 lands on the output size, cleanup never; every method gives the output size, and at x4 all are one."""
    from archive_restore.pipeline.stack import upscale_to

    seen = []

    def upscaler(x):
        seen.append(tuple(x.shape[-2:]))
        return torch.nn.functional.interpolate(x, scale_factor=4, mode="nearest")

    cleaned = torch.rand(1, 3, 30, 40, generator=torch.Generator().manual_seed(0))
    for size, method, wanted in [((60, 80), "full", [(30, 40)]), ((60, 80), "reduced", [(15, 20)]),
                                 ((30, 40), "reduced", [(8, 10)]), ((60, 80), "cleanup", []),
                                 ((120, 160), "reduced", [(30, 40)]), ((120, 160), "cleanup", [(30, 40)])]:
        seen.clear()
        out = upscale_to(cleaned, upscaler, 4, size, method)
        assert tuple(out.shape[-2:]) == size and seen == wanted, (size, method, seen)
    with pytest.raises(ValueError, match="unknown scale method"):
        upscale_to(cleaned, upscaler, 4, (60, 80), "fast")


def test_scale_method_in_the_job_and_its_identity(tmp_path, stack_models, scans, monkeypatch):
    """--scale 2 --scale-method reduced: the upscaler sees a quarter of the pixels and the method is part of the
    job's identity; full (and every x4 job) keeps the identity jobs had before the choice existed."""
    from archive_restore.pipeline.photo import PhotoJobOptions
    from archive_restore.upscalers.runtime import TorchRuntime

    upscaler = _compact(tmp_path / "tiny-x4.pth", 1)
    seen = []
    call = TorchRuntime.__call__
    monkeypatch.setattr(TorchRuntime, "__call__", lambda self, x: seen.append(tuple(x.shape[-2:])) or call(self, x))
    jobs = tmp_path / "jobs"
    base = ["run", scans, "--face-detector", "haar", "--upscaler", upscaler, "--scale", "2"]
    code, output = _invoke([*base, "-o", tmp_path / "reduced", "--scale-method", "reduced"], jobs, stack_models)
    assert code == 0, output
    assert read_image(tmp_path / "reduced" / "a.png").pixels.shape == (60, 80, 3)
    assert seen and max(seen) == (15, 20), seen  # a quarter of the 30x40 picture (whole: no tiles)
    seen.clear()
    code, output = _invoke([*base, "-o", tmp_path / "full", "--scale-method", "full"], jobs, stack_models)
    assert code == 0, output
    assert seen and max(seen) == (30, 40), seen
    reduced, full = sorted(_jobs(jobs), key=lambda j: j.output)[::-1]
    assert reduced.options["scale_method"] == "reduced" and "scale_method" not in full.options
    assert PhotoJobOptions.from_identity(full.options).scale_method == "full"
    assert "scale_method" not in PhotoJobOptions(scale=4, upscaler="x.pth", scale_method="reduced").identity()
    seen.clear()  # --scale 1 without --scale-method: the measured default, the cleanup without the upscaler
    code, output = _invoke(["run", scans, "--face-detector", "haar", "--upscaler", upscaler, "--scale", "1", "-o",
                            tmp_path / "x1"], jobs, stack_models)
    assert code == 0, output
    assert seen == [] and read_image(tmp_path / "x1" / "a.png").pixels.shape == (30, 40, 3)
    assert [j.options.get("scale_method") for j in _jobs(jobs) if j.output.endswith("x1")] == ["cleanup"]
