"""``run --adapt on`` (``pipeline.adapt``): the cleanup fine-tuned on a photo's own faces with its code, kept in the
job's folder and reused, made again (with a message) when its file is corrupt, the first kept the one used, part
of the job's identity, and what the job restores with."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from spandrel.architectures.Compact import Compact

from archive_restore.cli import cli
from archive_restore.jobs.store import JobStore
from archive_restore.nets import Cleanup
from archive_restore.pipeline import adapt
from archive_restore.pipeline.adapt import Adaptation, Adapter, face_pair
from archive_restore.pipeline.photo import PhotoJobOptions

SMALL = Adaptation(steps=3, batch=2, crop=16)


def _pairs(seed: int = 0) -> list[adapt.FacePair]:
    rng = np.random.default_rng(seed)
    clean = rng.random((40, 40, 3)).astype(np.float32)
    return [(np.clip(clean * 0.7 + 0.1 + rng.normal(0, 0.05, clean.shape), 0, 1).astype(np.float32), clean)]


def _adapter(folder: Path, notes: list[str]) -> Adapter:
    torch.manual_seed(0)
    return Adapter(Cleanup(code_dim=16, width=8, blocks=1), folder, "weights", SMALL, notify=notes.append)


def _weights(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(_weights(a), _weights(b)))


def test_a_code_is_adapted_once_kept_and_reused(tmp_path):
    notes: list[str] = []
    adapter, code, pairs = _adapter(tmp_path, notes), np.linspace(-1, 1, 16, dtype=np.float32), _pairs()
    ticks: list[int] = []
    first = adapter.cleanup_for(code, pairs, lambda: ticks.append(1))
    assert len(ticks) == SMALL.steps and adapter.path(code, pairs).is_file()
    assert not _same(first, adapter.cleanup)  # it learned
    again = _adapter(tmp_path, notes).cleanup_for(code, pairs, lambda: ticks.append(1))  # a resumed job's process
    assert len(ticks) == SMALL.steps and _same(first, again)  # not trained again: the kept weights
    assert adapter.path(code[::-1].copy(), pairs) != adapter.path(code, pairs)  # another code, another adaptation
    assert adapter.path(code, _pairs(1)) != adapter.path(code, pairs)  # other faces, another adaptation
    assert not list((tmp_path / adapt.KEPT).glob(".*")) and notes == []  # no temporary file left, nothing said


def test_the_same_photo_gives_the_same_weights_in_another_process(tmp_path):
    code = np.full(16, 0.3, np.float32)
    assert _same(_adapter(tmp_path / "a", []).cleanup_for(code, _pairs()),
                 _adapter(tmp_path / "b", []).cleanup_for(code, _pairs()))


def test_fine_tuning_on_the_face_pair_brings_the_cleanup_closer_to_the_clean_face():
    torch.manual_seed(0)
    cleanup, code, pairs = Cleanup(code_dim=16, width=8, blocks=1), np.zeros(16, np.float32), _pairs()
    lq, clean = (torch.from_numpy(x).permute(2, 0, 1)[None] for x in pairs[0])
    z = torch.zeros(1, 16)

    def error(model):
        with torch.no_grad():
            return float((model(lq, z) - clean).abs().mean())

    tuned = adapt.fine_tune(cleanup, code, pairs, Adaptation(steps=40, batch=4, crop=16, lr=1e-3))
    assert error(tuned) < 0.8 * error(cleanup)


def test_a_corrupt_kept_adaptation_is_made_again_with_a_message(tmp_path):
    notes: list[str] = []
    adapter, code, pairs = _adapter(tmp_path, notes), np.zeros(16, np.float32), _pairs()
    good = adapter.cleanup_for(code, pairs)
    path = adapter.path(code, pairs)
    path.write_bytes(path.read_bytes()[:100])  # truncated: a disk that filled up, a copy that stopped
    ticks: list[int] = []
    redone = adapter.cleanup_for(code, pairs, lambda: ticks.append(1))
    assert len(ticks) == SMALL.steps and len(notes) == 1
    assert notes[0].startswith(f"the kept adaptation {path.name} cannot be read") and "adapting again" in notes[0]
    assert _same(good, redone)


def test_the_first_adaptation_kept_is_the_one_every_worker_uses(tmp_path):
    adapter, code, pairs = _adapter(tmp_path, []), np.ones(16, np.float32), _pairs()
    theirs = Cleanup(code_dim=16, width=8, blocks=1)  # another worker finished first with other weights
    adapt.keep_first(theirs, adapter.path(code, pairs))
    assert _same(theirs, adapter.cleanup_for(code, pairs))


def test_a_face_pair_is_the_two_faces_at_the_faces_own_size_and_small_faces_are_left_out():
    lq, restored = np.full((512, 512, 3), 0.2, np.float32), np.full((512, 512, 3), 0.8, np.float32)
    pair = face_pair(lq, restored, 37.4)
    assert pair[0].shape == pair[1].shape == (37, 37, 3) and np.allclose(pair[0], 0.2) and np.allclose(pair[1], 0.8)
    assert face_pair(lq, restored, adapt.MIN_FACE - 1) is None


def test_adapt_is_part_of_the_jobs_identity():
    plain = PhotoJobOptions().identity()
    assert "adapt" not in plain  # jobs from before the option keep their identity
    plain = PhotoJobOptions(upscaler="/models/x4.pth").identity()
    on = PhotoJobOptions(adapt="on", upscaler="/models/x4.pth").identity()
    assert on["adapt"] == "on" and on != plain
    assert PhotoJobOptions.from_identity(on) == PhotoJobOptions(adapt="on", upscaler="/models/x4.pth")


@pytest.fixture
def upscaler(tmp_path) -> Path:
    torch.manual_seed(1)
    path = tmp_path / "tiny-x4.pth"
    torch.save({"params": Compact(num_feat=8, num_conv=2, upscale=4).state_dict()}, path)
    return path


def _run(args: list, jobs: Path, *models: Path):
    dirs = [a for m in models for a in ("--models-dir", str(m))]
    return CliRunner().invoke(cli, [*map(str, args), "--jobs-dir", str(jobs), *dirs])


def test_a_photo_with_faces_restores_with_its_adapted_cleanup_and_resume_reuses_it(tmp_path, tiny_models, upscaler,
                                                                                  random_restorer, face_rgb, monkeypatch):
    monkeypatch.setattr(adapt, "Adaptation", lambda: SMALL)  # a few steps: what is tested is the plumbing
    scans, jobs = tmp_path / "scans", tmp_path / "jobs"
    scans.mkdir()
    Image.fromarray(face_rgb).save(scans / "face.png")
    Image.fromarray(np.full((40, 48, 3), 120, np.uint8)).save(scans / "plain.png")  # no face: the shipped cleanup
    common = ["--face-detector", "haar", "--upscaler", upscaler, "--scale", "2"]
    plain = _run(["run", scans, "-o", tmp_path / "plain", *common], jobs, tiny_models, random_restorer)
    assert plain.exit_code == 0, plain.output
    trained: list[int] = []
    real_fine_tune = adapt.fine_tune
    monkeypatch.setattr(adapt, "fine_tune", lambda *a, **k: trained.append(1) or real_fine_tune(*a, **k))
    args = ["run", scans, "-o", tmp_path / "adapted", *common, "--adapt", "on"]
    first = _run(args, jobs, tiny_models, random_restorer)
    assert first.exit_code == 0, first.output
    with JobStore.open(jobs) as store:
        (job,) = [j for j in store.jobs() if j.options.get("adapt") == "on"]
        items = {i.key: i for i in store.items(job.id)}
        assert len(store.jobs()) == 2  # another job than the plain one
    face, other = items["face.png"], items["plain.png"]
    assert face.code_source == "faces" and len(trained) == 1
    assert (jobs / job.id / adapt.KEPT / f"{face.extra['adapted']}.safetensors").is_file()
    assert other.extra["adapted"] is None and other.extra["adapt_skipped"] == "no face of its own restored"
    assert (tmp_path / "adapted" / "face.png").read_bytes() != (tmp_path / "plain" / "face.png").read_bytes()
    assert (tmp_path / "adapted" / "plain.png").read_bytes() == (tmp_path / "plain" / "plain.png").read_bytes()
    again = _run([*args, "--restart"], jobs, tiny_models, random_restorer)  # restored again: the kept one reused
    assert again.exit_code == 0, again.output
    assert len(trained) == 1
    assert (tmp_path / "adapted" / "face.png").read_bytes() != (tmp_path / "plain" / "face.png").read_bytes()


def test_adapt_without_a_face_restorer_says_that_nothing_is_adapted(tmp_path, tiny_models, upscaler, face_rgb):
    scans = tmp_path / "scans"
    scans.mkdir()
    Image.fromarray(face_rgb).save(scans / "face.png")
    result = _run(["run", scans, "--face-detector", "haar", "--upscaler", upscaler, "--scale", "2", "--adapt", "on",
                   "--face-restorer", "none"], tmp_path / "jobs", tiny_models)
    assert result.exit_code == 0, result.output
    assert "--adapt on learns from the face restorer's faces, and there is none" in result.output


@pytest.fixture
def ours(tmp_path) -> Path:
    """A models folder with a tiny random face restorer of ours (``face_net``)."""
    from archive_restore.nets import save_checkpoint
    from archive_restore.nets.face_net import FaceNet
    from archive_restore.weights.folders import MODEL_FILES

    folder = tmp_path / "ours"
    folder.mkdir()
    torch.manual_seed(0)
    save_checkpoint(FaceNet(features=4, depth=2), folder / MODEL_FILES["face_net"])
    return folder


def test_adapt_does_not_learn_from_our_face_restorers_faces_and_says_so_once(tmp_path, tiny_models, upscaler, ours,
                                                                            face_rgb, monkeypatch):
    """Adapted to our face restorer's soft faces, real photos came out softer (NIQE 6.06 -> 6.95): with it, the
    photo keeps the shipped cleanup, recorded with why, and the job says so once."""
    trained: list[int] = []
    monkeypatch.setattr(adapt, "fine_tune", lambda *a, **k: trained.append(1))
    scans, jobs = tmp_path / "scans", tmp_path / "jobs"
    scans.mkdir()
    for name in ("a.png", "b.png"):
        Image.fromarray(face_rgb).save(scans / name)
    result = _run(["run", scans, "-o", tmp_path / "out", "--face-detector", "haar", "--upscaler", upscaler, "--scale",
                   "2", "--adapt", "on", "--faces-without-restorer", "ours"], jobs, tiny_models, ours)
    assert result.exit_code == 0, result.output
    assert result.output.count("our face restorer's are too soft to learn from") == 1
    with JobStore.open(jobs) as store:
        (job,) = store.jobs()
        items = store.items(job.id)
    assert {i.code_source for i in items} == {"faces"} and all(i.extra["faces_restored"] >= 1 for i in items)
    assert {i.extra["adapt_skipped"] for i in items} == {"its faces restored by our face restorer, not learnt from"}
    assert trained == [] and all(i.extra["adapted"] is None for i in items)


def test_adapt_with_condsr_alone_is_refused_before_any_work(tmp_path, tiny_models):
    scans = tmp_path / "scans"
    scans.mkdir()
    Image.fromarray(np.full((40, 48, 3), 120, np.uint8)).save(scans / "a.png")
    result = _run(["run", scans, "--adapt", "on", "--upscaler", "condsr", "--face-detector", "haar"],
                  tmp_path / "jobs", tiny_models)
    assert result.exit_code == 2 and "--adapt fine-tunes the cleanup, which --upscaler condsr does not use" in result.output
    assert not (tmp_path / "jobs").exists() or not list((tmp_path / "jobs").glob("*/adapted"))


def test_a_video_shot_with_faces_restores_with_its_adapted_cleanup(tmp_path, tiny_models, upscaler, random_restorer,
                                                                   face_rgb, monkeypatch):
    """`video --adapt on`: the analysis keeps the shot's faces (LQ, restored) in the job's folder, its chunks restore
    with the cleanup fine-tuned on them, once per shot; the output differs from the shipped cleanup's."""
    monkeypatch.setattr(adapt, "Adaptation", lambda: SMALL)
    clip = _face_clip(face_rgb, tmp_path / "face.mp4")
    trained: list[int] = []
    real_fine_tune = adapt.fine_tune
    monkeypatch.setattr(adapt, "fine_tune", lambda *a, **k: trained.append(1) or real_fine_tune(*a, **k))
    jobs, outputs = tmp_path / "jobs", {}
    for name, extra in (("plain", []), ("adapted", ["--adapt", "on"])):
        outputs[name] = tmp_path / f"{name}.mp4"
        result = _run(["video", clip, "-o", outputs[name], "--scale", "2", "--preset", "ultrafast", "--face-detector",
                       "haar", "--upscaler", upscaler, "--chunk-frames", "3", *extra], jobs, tiny_models, random_restorer)
        assert result.exit_code == 0, result.output
    with JobStore.open(jobs) as store:
        (job,) = [j for j in store.jobs() if j.options.get("adapt") == "on"]
        chunks = [i for i in store.items(job.id) if i.key.startswith("shot")]
    assert len(chunks) == 2 and all(c.extra["adapted"] for c in chunks)
    assert len({c.extra["adapted"] for c in chunks}) == 1 and len(trained) == 1  # one shot: adapted once
    assert (jobs / job.id / chunks[0].extra["adapt_pairs"]).is_file()
    assert outputs["adapted"].read_bytes() != outputs["plain"].read_bytes()


def _face_clip(face_rgb: np.ndarray, path: Path) -> Path:
    """A 6-frame clip of a still face (one shot)."""
    import av

    from archive_restore.bench.steady import still_face_clip

    face = face_rgb[: face_rgb.shape[0] // 2 * 2].astype(np.float32) / 255
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25, options={"crf": "4", "preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = face.shape[1], face.shape[0], "yuv444p"
        for frame in still_face_clip(face, 6, 0.02, seed=2):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(np.round(frame * 255).astype(np.uint8), format="rgb24")))
        out.mux(stream.encode())
    return path


def test_a_video_shot_with_faces_from_our_face_restorer_keeps_the_shipped_cleanup(tmp_path, tiny_models, upscaler,
                                                                                  ours, face_rgb, monkeypatch):
    """`video --adapt on --faces-without-restorer ours`: the shot's faces are restored by ours and pasted, and not
    learnt from (its chunks keep the shipped cleanup, recorded with why), said once."""
    trained: list[int] = []
    monkeypatch.setattr(adapt, "fine_tune", lambda *a, **k: trained.append(1))
    clip, jobs = _face_clip(face_rgb, tmp_path / "face.mp4"), tmp_path / "jobs"
    result = _run(["video", clip, "-o", tmp_path / "out.mp4", "--scale", "2", "--preset", "ultrafast", "--face-detector",
                   "haar", "--upscaler", upscaler, "--chunk-frames", "3", "--adapt", "on", "--faces-without-restorer",
                   "ours"], jobs, tiny_models, ours)
    assert result.exit_code == 0, result.output
    assert result.output.count("our face restorer's are too soft to learn from") == 1
    with JobStore.open(jobs) as store:
        (job,) = store.jobs()
        chunks = [i for i in store.items(job.id) if i.key.startswith("shot")]
    assert len(chunks) == 2 and all(c.code_source == "faces" and c.extra["adapted"] is None for c in chunks)
    assert {c.extra["adapt_skipped"] for c in chunks} == {"its faces restored by our face restorer, not learnt from"}
    assert trained == []


def test_the_adapted_weights_do_not_depend_on_the_callers_thread_count():
    """A Ray worker runs at one thread, the local executor at several: fine-tuning runs at one thread on the CPU so
    both make the same weights (the shipped cleanup's, two threads against one, were 3e-8 apart before)."""
    from archive_restore.nets import load_checkpoint
    from archive_restore.paths import REPO_ROOT

    cleanup = load_checkpoint(REPO_ROOT / "models" / "cleanup_compact.safetensors", expect="Cleanup").model
    code, pairs = np.random.default_rng(0).normal(size=cleanup.code_dim).astype(np.float32), _pairs()
    before = torch.get_num_threads()
    made = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            made.append(adapt.fine_tune(cleanup, code, pairs, Adaptation(steps=10)))
            assert torch.get_num_threads() == threads  # the caller's count is given back
    finally:
        torch.set_num_threads(before)
    assert _same(*made)


def test_a_photo_whose_kept_faces_are_gone_is_adapted_to_the_same_faces(tmp_path, tiny_models, upscaler,
                                                                        random_restorer, face_rgb, monkeypatch):
    """A render after a crash that came after the kept faces were removed (before the photo was marked done)
    restores the faces again: the adaptation learns from the same faces, so the same kept one is used."""
    from archive_restore.pipeline import face_cache

    monkeypatch.setattr(adapt, "Adaptation", lambda: SMALL)
    scans, jobs = tmp_path / "scans", tmp_path / "jobs"
    scans.mkdir()
    Image.fromarray(face_rgb).save(scans / "face.png")
    args = ["run", scans, "-o", tmp_path / "out", "--face-detector", "haar", "--upscaler", upscaler, "--scale", "2",
            "--adapt", "on"]
    assert _run(args, jobs, tiny_models, random_restorer).exit_code == 0
    first = (tmp_path / "out" / "face.png").read_bytes()
    with JobStore.open(jobs) as store:
        (job,) = store.jobs()
        (item,) = store.items(job.id)
    assert not face_cache.cache_path(jobs / job.id, item.key).exists()  # removed once the photo was written
    with JobStore.open(jobs) as store:  # as after a crash before the photo was marked done: to render again
        with store.db.conn:
            store.db.conn.execute("UPDATE items SET status = 'pending' WHERE id = ?", (item.id,))
    trained: list[int] = []
    real_fine_tune = adapt.fine_tune
    monkeypatch.setattr(adapt, "fine_tune", lambda *a, **k: trained.append(1) or real_fine_tune(*a, **k))
    again = _run(args, jobs, tiny_models, random_restorer)
    assert again.exit_code == 0, again.output
    with JobStore.open(jobs) as store:
        (redone,) = store.items(job.id)
    assert redone.attempts == 2 and redone.extra["adapted"] == item.extra["adapted"] and trained == []
    assert (tmp_path / "out" / "face.png").read_bytes() == first
