"""``--adapt`` (``pipeline.adapt``): the cleanup fine-tuned to a code on DegSynth pairs, kept in the job's folder
and reused, made again (with a message) when its file is corrupt, part of the job's identity, and what the
job restores with."""
from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from spandrel.architectures.Compact import Compact

from archive_restore.cli import cli
from archive_restore.jobs.store import JobStore
from archive_restore.nets import Cleanup, DegSynth
from archive_restore.pipeline import adapt
from archive_restore.pipeline.adapt import Adaptation, Adapter, HQBank
from archive_restore.pipeline.photo import PhotoJobOptions

SMALL = Adaptation(steps=3, batch=2, crop=32)


def _photos(folder: Path, count: int, size: tuple[int, int] = (48, 64), seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        small = rng.random((6, 8, 3))
        cv2.imwrite(str(folder / f"p{i}.png"), (cv2.resize(small, size[::-1], interpolation=cv2.INTER_CUBIC) * 255)
                    .astype(np.uint8))
    return folder


def _adapter(tmp_path: Path, notes: list[str]) -> Adapter:
    torch.manual_seed(0)
    bank = HQBank.from_folder(_photos(tmp_path / "hq", 3), SMALL.crop)
    return Adapter(Cleanup(code_dim=16, width=8, blocks=1), DegSynth(code_dim=16, width=4, layers=1), bank,
                   tmp_path / "job", "weights", SMALL, notify=notes.append)


def _weights(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def test_a_code_is_adapted_once_kept_and_reused(tmp_path):
    notes: list[str] = []
    adapter, code = _adapter(tmp_path, notes), np.linspace(-1, 1, 16, dtype=np.float32)
    ticks: list[int] = []
    first = adapter.cleanup_for(code, lambda: ticks.append(1))
    assert len(ticks) == SMALL.steps and adapter.path(code).is_file()
    assert any(not torch.equal(a, b) for a, b in zip(_weights(first), _weights(adapter.cleanup)))  # it learned
    again = _adapter(tmp_path, notes).cleanup_for(code, lambda: ticks.append(1))  # a resumed job: a new process
    assert len(ticks) == SMALL.steps  # not trained again
    assert all(torch.equal(a, b) for a, b in zip(_weights(first), _weights(again)))
    other = adapter.path(code[::-1].copy())
    assert other != adapter.path(code)  # another code, another adaptation
    assert not list((tmp_path / "job" / adapt.KEPT).glob(".*"))  # no temporary file left
    assert notes == []


def test_the_same_code_gives_the_same_weights_in_another_process(tmp_path):
    code = np.full(16, 0.3, np.float32)
    a = _adapter(tmp_path / "a", []).cleanup_for(code)
    b = _adapter(tmp_path / "b", []).cleanup_for(code)
    assert all(torch.equal(x, y) for x, y in zip(_weights(a), _weights(b)))


def test_a_corrupt_kept_adaptation_is_made_again_with_a_message(tmp_path):
    notes: list[str] = []
    adapter, code = _adapter(tmp_path, notes), np.zeros(16, np.float32)
    good = _weights(adapter.cleanup_for(code))
    path = adapter.path(code)
    path.write_bytes(path.read_bytes()[:100])  # truncated: a disk that filled up, a copy that stopped
    ticks: list[int] = []
    redone = adapter.cleanup_for(code, lambda: ticks.append(1))
    assert len(ticks) == SMALL.steps and len(notes) == 1
    assert notes[0].startswith(f"the kept adaptation {path.name} cannot be read") and "adapting again" in notes[0]
    assert all(torch.equal(a, b) for a, b in zip(good, _weights(redone)))


def test_the_first_adaptation_kept_is_the_one_every_worker_uses(tmp_path):
    adapter, code = _adapter(tmp_path, []), np.ones(16, np.float32)
    theirs = Cleanup(code_dim=16, width=8, blocks=1)  # another worker finished first with other weights
    adapt.keep_first(theirs, adapter.path(code))
    mine = adapter.cleanup_for(code)
    assert all(torch.equal(a, b) for a, b in zip(_weights(theirs), _weights(mine)))


def test_adapt_is_part_of_the_jobs_identity():
    plain = PhotoJobOptions().identity()
    assert "adapt" not in plain  # jobs from before the option keep their identity
    on = PhotoJobOptions(adapt="on").identity()
    assert on["adapt"] == "on" and on != plain
    assert PhotoJobOptions(adapt="on", adapt_data="/good").identity() != on
    assert PhotoJobOptions.from_identity(on) == PhotoJobOptions(adapt="on")


@pytest.fixture
def stack_setup(tiny_models, tmp_path) -> tuple[Path, Path]:
    """Models with a tiny x4 upscaler file beside them (the stack has a cleanup to adapt)."""
    folder = tmp_path / "models"
    shutil.copytree(tiny_models, folder)
    torch.manual_seed(1)
    upscaler = tmp_path / "tiny-x4.pth"
    torch.save({"params": Compact(num_feat=8, num_conv=2, upscale=4).state_dict()}, upscaler)
    return folder, upscaler


def _run(args: list, jobs: Path, models: Path):
    return CliRunner().invoke(cli, [*map(str, args), "--jobs-dir", str(jobs), "--models-dir", str(models)])


def test_a_photo_job_restores_with_the_adapted_cleanup_and_reuses_it(tmp_path, stack_setup, monkeypatch):
    models, upscaler = stack_setup
    monkeypatch.setattr(adapt, "Adaptation", lambda: SMALL)  # a few steps: what is tested is the plumbing
    scans, good, jobs = _photos(tmp_path / "scans", 2), _photos(tmp_path / "good", 2, (64, 64), seed=5), tmp_path / "jobs"
    common = ["--face-detector", "haar", "--upscaler", upscaler, "--scale", "2"]
    plain = _run(["run", scans, "-o", tmp_path / "plain", *common], jobs, models)
    assert plain.exit_code == 0, plain.output
    trained: list[int] = []
    real_fine_tune = adapt.fine_tune
    monkeypatch.setattr(adapt, "fine_tune", lambda *a, **k: trained.append(1) or real_fine_tune(*a, **k))
    args = ["run", scans, "-o", tmp_path / "adapted", *common, "--adapt", "on", "--adapt-data", good]
    first = _run(args, jobs, models)
    assert first.exit_code == 0, first.output
    with JobStore.open(jobs) as store:
        jobs_now = store.jobs()
        (job,) = [j for j in jobs_now if j.options.get("adapt") == "on"]
        items = store.items(job.id)
    assert len(jobs_now) == 2  # another job than the plain one
    keys = {i.extra["adapted"] for i in items}
    assert len(trained) == len(keys) == 2  # no faces: each photo has its own (blind) code, adapted to once
    assert all((jobs / job.id / adapt.KEPT / f"{k}.safetensors").is_file() for k in keys)
    for name in ("p0.png", "p1.png"):
        assert (tmp_path / "adapted" / name).read_bytes() != (tmp_path / "plain" / name).read_bytes()
    again = _run([*args, "--restart"], jobs, models)  # every photo restored again: the kept adaptations reused
    assert again.exit_code == 0, again.output
    assert len(trained) == 2


def test_adapt_options_are_checked_before_any_work(tmp_path, stack_setup):
    models, upscaler = stack_setup
    scans = _photos(tmp_path / "scans", 1)
    lonely = _run(["run", scans, "--adapt-data", scans], tmp_path / "jobs", models)
    assert lonely.exit_code == 2 and "--adapt-data applies with --adapt on" in lonely.output
    (tmp_path / "empty").mkdir()
    empty = _run(["run", scans, "--adapt", "on", "--adapt-data", tmp_path / "empty", "--upscaler", upscaler],
                 tmp_path / "jobs", models)
    assert empty.exit_code == 2 and "--adapt found no picture" in empty.output
    condsr = _run(["run", scans, "--adapt", "on", "--upscaler", "condsr", "--face-detector", "haar"],
                  tmp_path / "jobs", models)
    assert condsr.exit_code != 0 and "--adapt fine-tunes the cleanup, which --upscaler condsr does not use" in condsr.output
