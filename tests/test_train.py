"""Training: a few steps reduce the loss on a fixed batch; the stages run end to end, resume from
their own state, and export checkpoints that rebuild themselves."""
import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from archive_restore.cli import cli
from archive_restore.nets import BlindDegEncoder, Cleanup, CondSR, DegEncoder, DegSynth, load_checkpoint
from archive_restore.train.data import FaceBank, ImageBank, find_real_pairs, load_real_pairs
from archive_restore.train.cleanup_stage import CODE_MIX, CleanupStep, clean_target, imperfect_codes
from archive_restore.train.degradation_stage import DegradationStep, make_param_head
from archive_restore.train.distill_stage import DistillStep
from archive_restore.train.sr_stage import RestorerStep

torch.set_num_threads(1)


def _smooth_image(rng, h, w):
    small = rng.random((h // 8, w // 8, 3))
    return (cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC).clip(0, 1) * 255).astype(np.uint8)


@pytest.fixture
def tiny_data(tmp_path):
    """A miniature training folder with the layout of ../shared/data/train."""
    rng = np.random.default_rng(0)
    root = tmp_path / "train"
    for sub, n, size in (("hq_natural/a", 3, 200), ("hq_faces/x", 3, 128), ("hq_faces/faces256", 1, 128)):
        (root / sub).mkdir(parents=True)
        for i in range(n):
            cv2.imwrite(str(root / sub / f"{i}.png"), _smooth_image(rng, size, size))
    for sub in ("real_face_pairs/LQ", "real_face_pairs/PseudoHQ"):
        (root / sub).mkdir(parents=True)
        for i in range(2):
            cv2.imwrite(str(root / sub / f"{i:06d}.png"), _smooth_image(rng, 64, 64))
    return root


def test_real_pairs_matched_by_name(tiny_data):
    pairs = find_real_pairs(tiny_data / "real_face_pairs")
    assert [(a.name, b.parent.name) for a, b in pairs] == [("000000.png", "PseudoHQ"), ("000001.png", "PseudoHQ")]


def test_face_bank_holds_out_benchmark_faces(tiny_data):
    assert len(FaceBank(tiny_data / "hq_faces", 32)) == 3


def test_restorer_steps_reduce_loss_on_a_fixed_batch(tiny_data):
    torch.manual_seed(0)
    faces = FaceBank(tiny_data / "hq_faces", 64)
    naturals = ImageBank.from_folder(tiny_data / "hq_natural", 64)
    encoder = DegEncoder(code_dim=16, width=8, input_size=64).eval()
    model = CondSR(code_dim=16, width=8, blocks=1)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    step = RestorerStep(model, opt, encoder, None, faces, naturals, [], seed=0, batch=4, crop=64)
    losses = [step(0)["l1"] for _ in range(40)]  # step index 0 every time: the same batch
    assert losses[-1] < 0.8 * losses[0]


def test_degradation_steps_reduce_loss_on_a_fixed_batch(tiny_data):
    torch.manual_seed(0)
    faces = FaceBank(tiny_data / "hq_faces", 64)
    naturals = ImageBank.from_folder(tiny_data / "hq_natural", 64)
    pairs = load_real_pairs([tiny_data / "real_face_pairs"], 64)
    enc, syn, head = DegEncoder(code_dim=16, width=8, input_size=64), DegSynth(code_dim=16, width=8, layers=1), make_param_head(16)
    opt = torch.optim.Adam([*enc.parameters(), *syn.parameters(), *head.parameters()], lr=3e-3)
    step = DegradationStep(enc, syn, head, opt, faces, naturals, pairs, seed=0, batch=4, real_batch=2)
    first = step(0)
    for _ in range(30):
        last = step(0)
    assert last["param"] < first["param"] and last["synth"] < first["synth"]


def test_blind_distillation_learns_through_the_frozen_restorer(tiny_data):
    """The blind encoder's restoration error falls on a fixed batch; the restorer itself stays as it was."""
    torch.manual_seed(0)
    faces = FaceBank(tiny_data / "hq_faces", 64)
    naturals = ImageBank.from_folder(tiny_data / "hq_natural", 64)
    teacher = DegEncoder(code_dim=16, width=8, input_size=64).eval().requires_grad_(False)
    restorer = CondSR(code_dim=16, width=8, blocks=1).eval().requires_grad_(False)
    for p in restorer.parameters():  # a fresh CondSR ignores its code (zero-initialised modulation)
        p.add_(0.1 * torch.randn_like(p))
    before = [p.clone() for p in restorer.parameters()]
    blind = BlindDegEncoder(code_dim=16, width=8, input_size=64)
    step = DistillStep(blind, torch.optim.Adam(blind.parameters(), lr=3e-3), teacher, restorer, faces, naturals, seed=0, batch=4)
    first = step(0)
    for _ in range(30):
        last = step(0)
    total = lambda losses: losses["mse"] + step.restore_weight * losses["l1"]  # noqa: E731
    assert last["l1"] < 0.9 * first["l1"] and total(last) < total(first)
    assert all(torch.equal(a, b) for a, b in zip(before, restorer.parameters()))


def test_cleanup_steps_reduce_loss_on_a_fixed_batch(tiny_data):
    """The cleanup learns the clean picture at the LQ's own size from the restorer stage's pairs."""
    torch.manual_seed(0)
    faces = FaceBank(tiny_data / "hq_faces", 64)
    naturals = ImageBank.from_folder(tiny_data / "hq_natural", 64)
    encoder = DegEncoder(code_dim=16, width=8, input_size=64).eval().requires_grad_(False)
    blind = BlindDegEncoder(code_dim=16, width=8, input_size=64).eval().requires_grad_(False)
    model = Cleanup(code_dim=16, width=16, blocks=1)
    pairs = RestorerStep(None, None, encoder, None, faces, naturals, [], seed=0, batch=4, crop=64)
    step = CleanupStep(model, torch.optim.Adam(model.parameters(), lr=3e-3), pairs, blind)
    lq, _, clean = step.batch(0)
    assert lq.shape == clean.shape == (4, 3, 16, 16)
    losses = [step(0) for _ in range(40)]  # step index 0 every time: the same batch
    assert float(losses[0]["l1"]) == pytest.approx(float(losses[0]["l1_input"]), rel=1e-4)  # an untrained cleanup is the identity
    assert losses[-1]["l1"] < 0.9 * losses[0]["l1"]


def test_every_stage_builds_its_batches_on_the_models_device(tiny_data):
    """Batches are made on the CPU; a stage whose networks live elsewhere (CUDA in production) must
    move them there. The ``meta`` device stands in for CUDA on a machine without one: a batch left
    on the CPU meets a meta weight and fails, and the losses come back on the networks' device."""
    faces = FaceBank(tiny_data / "hq_faces", 64)
    naturals = ImageBank.from_folder(tiny_data / "hq_natural", 64)
    pairs = load_real_pairs([tiny_data / "real_face_pairs"], 64)
    meta = torch.device("meta")
    enc = DegEncoder(code_dim=16, width=8, input_size=64).to(meta)
    syn, head = DegSynth(code_dim=16, width=8, layers=1).to(meta), make_param_head(16).to(meta)
    condsr, blind = CondSR(code_dim=16, width=8, blocks=1).to(meta), BlindDegEncoder(code_dim=16, width=8, input_size=64).to(meta)
    cleanup = Cleanup(code_dim=16, width=16, blocks=1).to(meta)
    adam = lambda *nets: torch.optim.Adam([p for n in nets for p in n.parameters()], lr=1e-3)  # noqa: E731
    restorer = RestorerStep(condsr, adam(condsr), enc, syn, faces, naturals, pairs, seed=0, batch=2, crop=64,
                            synth_share=1.0)  # the DegSynth branch, with real pairs, every step
    steps = {
        "degradation": DegradationStep(enc, syn, head, adam(enc, syn, head), faces, naturals, pairs, seed=0, batch=2,
                                       real_batch=2),
        "restorer": restorer,
        "restorer (handcrafted)": RestorerStep(condsr, adam(condsr), enc, syn, faces, naturals, [], seed=0, batch=2, crop=64),
        "blind": DistillStep(blind, adam(blind), enc, condsr, faces, naturals, seed=0, batch=2),
        "cleanup": CleanupStep(cleanup, adam(cleanup), restorer, blind),
    }
    for name, step in steps.items():
        losses = step(0)
        assert losses and all(v.device == meta for v in losses.values()), name


def test_clean_target_is_the_hq_area_reduced():
    hq = torch.rand(1, 3, 8, 8)
    assert torch.allclose(clean_target(hq, 4)[0, :, 0, 0], hq[0, :, :4, :4].mean(dim=(1, 2)))


def test_imperfect_codes_mix_every_kind_and_keep_the_rest_exact():
    torch.manual_seed(0)
    z, z_blind = torch.randn(400, 8), torch.randn(400, 8)
    codes, kinds = imperfect_codes(np.random.default_rng(0), z, z_blind)
    shares = {k: kinds.count(k) / len(kinds) for k in CODE_MIX}
    assert all(abs(shares[k] - p) < 0.07 for k, p in CODE_MIX.items())
    for i, kind in enumerate(kinds):
        if kind == "face":
            assert torch.equal(codes[i], z[i])
        elif kind == "blind":
            assert torch.equal(codes[i], z_blind[i])
        elif kind == "neighbour":
            assert torch.equal(codes[i], z[i - 1])
        else:
            assert 0 < (codes[i] - z[i]).norm() < 3 * z.std(dim=0).norm()


def test_train_cli_all_stages_resume_and_export(tiny_data, tmp_path):
    models, work = tmp_path / "models", tmp_path / "work"
    args = ["--data", str(tiny_data), "--models-dir", str(models), "--work-dir", str(work), "--device", "cpu", "--batch", "2"]
    runner = CliRunner()
    result = runner.invoke(cli, ["train", "all", "--steps", "1", *args])
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in models.iterdir())
    assert names == ["blind_encoder.safetensors", "cleanup_compact.safetensors", "condsr_compact.safetensors",
                     "condsr_uncond_compact.safetensors", "deg_encoder.safetensors", "deg_synth.safetensors"]
    result = runner.invoke(cli, ["train", "restorer", "--steps", "3", *args])
    assert result.exit_code == 0, result.output
    assert "restorer: step 3" in result.output  # resumed at step 1, ran 2 more
    ckpt = load_checkpoint(models / "condsr_compact.safetensors", expect="CondSR")
    assert ckpt.info["steps"] == 3 and ckpt.info["stage"] == "condsr" and "hq_natural" in ckpt.info["data"]
    assert not load_checkpoint(models / "condsr_uncond_compact.safetensors").model.conditioned


def test_train_cli_missing_data_is_a_clear_error(tmp_path):
    result = CliRunner().invoke(cli, ["train", "degradation", "--data", str(tmp_path / "nowhere"), "--steps", "1",
                                      "--work-dir", str(tmp_path / "w"), "--models-dir", str(tmp_path / "m")])
    assert result.exit_code == 1
    assert "error: training data folder" in result.output and "--data" in result.output


def test_state_saved_after_warmup_resumes_with_weights_only_loading(tmp_path):
    """Regression: past the warm-up, cosine_lr returned a numpy scalar that the optimizer state kept,
    and torch.load(weights_only=True) then refused the saved state, so no long run could resume."""
    from archive_restore.train.loop import RunState, cosine_lr, load_state, save_state

    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    lr = cosine_lr(1e-3, step=250, total=1000)
    assert type(lr) is float and 0 < lr < 1e-3
    for group in optimizer.param_groups:
        group["lr"] = lr
    path = tmp_path / "stage.state"
    save_state(path, {"model": model}, optimizer, RunState(step=250, seconds=1.5, losses={"l1": 0.1}))
    fresh = torch.nn.Linear(4, 2)
    fresh_opt = torch.optim.Adam(fresh.parameters(), lr=1e-3)
    state = load_state(path, {"model": fresh}, fresh_opt)
    assert state.step == 250
    assert fresh_opt.param_groups[0]["lr"] == pytest.approx(lr)
    assert torch.equal(fresh.weight, model.weight)


def test_the_student_upscaler_learns_the_teachers_pictures():
    """``StudentStep``: L1 and gradient L1 to the teacher's answers fall over a few steps on fixed patches."""
    from archive_restore.nets.realesrgan import SRVGGNetCompact
    from archive_restore.train.upscaler_stage import StudentStep, gradient_l1

    torch.manual_seed(0)
    student = SRVGGNetCompact(2, 8, 4)
    lq = F.interpolate(torch.rand(8, 3, 4, 4), size=(12, 12), mode="bilinear", align_corners=False)
    target = F.interpolate(lq, scale_factor=4, mode="bicubic", align_corners=False)  # a teacher to learn
    step = StudentStep(student, torch.optim.Adam(student.parameters(), lr=1e-2), lq, target, seed=0, batch=4)

    def losses():
        with torch.no_grad():
            out = student(lq)
        return float((out - target).abs().mean()), float(gradient_l1(out, target))

    before = losses()
    for i in range(100):
        step(i)
    after = losses()
    assert after[0] < 0.5 * before[0] and after[1] < 0.5 * before[1], (before, after)
    flat = torch.zeros(1, 3, 4, 4)
    assert float(gradient_l1(flat, flat + 0.5)) == 0.0  # a shift has the same edges
    ramp = torch.arange(4.0).expand(1, 3, 4, 4)
    assert float(gradient_l1(ramp, flat)) == 1.0  # the mean |d/dx| (1) plus the mean |d/dy| (0)


def test_train_cli_upscaler_distils_caches_resumes_and_exports(tiny_data, tiny_models, tmp_path, monkeypatch):
    import json
    import shutil

    from safetensors import safe_open

    from archive_restore.nets.realesrgan import SRVGGNetCompact
    from archive_restore.train import upscaler_stage
    from archive_restore.train.run import STUDENT_FILE, TrainConfig, train_upscaler
    from archive_restore.train.loop import Budget
    from archive_restore.upscalers.upscaler import load_upscaler, resolve_upscaler

    monkeypatch.setattr(upscaler_stage, "CHUNK", 2)
    torch.manual_seed(1)
    teacher = tmp_path / "teacher.pth"
    torch.save({"params": SRVGGNetCompact(2, 8, 4).state_dict()}, teacher)
    models, work = tmp_path / "models", tmp_path / "work"
    shutil.copytree(tiny_models, models)
    args = ["train", "upscaler", "--data", str(tiny_data), "--models-dir", str(models), "--work-dir", str(work),
            "--device", "cpu", "--batch", "2", "--teacher", str(teacher), "--patches", "4", "--lr", "1e-4"]
    result = CliRunner().invoke(cli, [*args, "--steps", "1"])
    assert result.exit_code == 0, result.output
    chunks = sorted((work / "upscaler_targets").glob("chunk-*.npz"))
    assert [p.name for p in chunks] == ["chunk-0000.npz", "chunk-0001.npz"]
    made = [p.stat().st_mtime_ns for p in chunks]
    with np.load(chunks[0]) as data:
        assert data["lq"].shape == (2, 3, 48, 48) and data["target"].shape == (2, 3, 192, 192)
        assert data["target"].dtype == np.uint8
    result = CliRunner().invoke(cli, [*args, "--steps", "3"])
    assert result.exit_code == 0 and "upscaler: step 3" in result.output  # resumed at step 1
    assert [p.stat().st_mtime_ns for p in chunks] == made  # the teacher's answers were read back, not remade
    student = load_upscaler(resolve_upscaler(str(models / STUDENT_FILE)), runtime="torch")
    assert student.architecture == "RealESRGAN Compact" and student.scale == 4
    with safe_open(str(models / STUDENT_FILE), "pt") as f:
        info = json.loads(f.metadata()["archive_restore"])
    assert info["steps"] == 3 and "teacher" in info["teacher"] and "BSD-3-Clause" in info["licence"]
    assert info["started_from"].startswith("random weights (realesr-animevideov3 not used")
    start = tmp_path / "start.pth"  # the student's own layout: its weights are where training starts
    torch.save({"params": SRVGGNetCompact(16, 64, 4).state_dict()}, start)
    cfg = TrainConfig(data=tiny_data, models_dir=models, work_dir=tmp_path / "w2", budget=Budget(0), batch=2)
    train_upscaler(cfg, teacher=str(teacher), init=str(start), patches=2, progress=False)
    with safe_open(str(models / STUDENT_FILE), "pt") as f:
        assert json.loads(f.metadata()["archive_restore"])["started_from"].startswith("start (file given")
        assert torch.equal(f.get_tensor("body.0.weight"), torch.load(start)["params"]["body.0.weight"])


def test_train_cli_upscaler_gan_starts_from_the_student_resumes_and_exports_the_ema(tiny_data, tiny_models, tmp_path,
                                                                                     monkeypatch):
    import json
    import shutil

    from safetensors import safe_open

    from archive_restore.nets.realesrgan import RRDBNet, SRVGGNetCompact
    from archive_restore.train import upscaler_stage
    from archive_restore.train.run import STUDENT_FILE

    monkeypatch.setattr(upscaler_stage, "CHUNK", 2)
    torch.manual_seed(1)
    teacher = tmp_path / "teacher.pth"  # the perceptual term reads an RRDBNet's first layers
    torch.save({"params_ema": RRDBNet(blocks=1, features=8, growth=4).state_dict()}, teacher)
    models, work = tmp_path / "models", tmp_path / "work"
    shutil.copytree(tiny_models, models)
    common = ["--data", str(tiny_data), "--models-dir", str(models), "--work-dir", str(work), "--device", "cpu",
              "--batch", "2", "--teacher", str(teacher), "--patches", "4", "--lr", "1e-4"]
    missing = CliRunner().invoke(cli, ["train", "upscaler-gan", *common, "--steps", "1"])
    assert missing.exit_code != 0 and "run `archive-restore train upscaler` first" in missing.output
    assert CliRunner().invoke(cli, ["train", "upscaler", *common, "--steps", "1"]).exit_code == 0
    with safe_open(str(models / STUDENT_FILE), "pt") as f:
        l1_student = {k: f.get_tensor(k) for k in f.keys()}
    first = CliRunner().invoke(cli, ["train", "upscaler-gan", *common, "--steps", "2"])
    assert first.exit_code == 0, first.output
    again = CliRunner().invoke(cli, ["train", "upscaler-gan", *common, "--steps", "3"])
    assert again.exit_code == 0 and "upscaler-gan: step 3" in again.output, again.output  # resumed at step 2
    with safe_open(str(models / STUDENT_FILE), "pt") as f:
        info = json.loads(f.metadata()["archive_restore"])
        gan = {k: f.get_tensor(k) for k in f.keys()}
    assert info["stage"] == "upscaler-gan" and info["steps"] == 3 and info["l1_stage_steps"] == 1
    assert set(info["gan_losses"]) == {"l1", "percep", "g", "d"} and "BSD-3-Clause" in info["licence"]
    assert gan.keys() == l1_student.keys() and any(not torch.equal(gan[k], l1_student[k]) for k in gan)
    compact = tmp_path / "compact.pth"
    torch.save({"params": SRVGGNetCompact(2, 8, 4).state_dict()}, compact)
    refused = CliRunner().invoke(cli, ["train", "upscaler-gan", *common[:-6], "--teacher", str(compact),
                                       "--patches", "4", "--steps", "4", "--work-dir", str(tmp_path / "w3")])
    assert refused.exit_code != 0 and "needs an RRDBNet teacher" in refused.output


def test_raw_teacher_patches_skip_the_cleanup_and_keep_their_own_stream(tmp_path):
    """``TeacherCache(clean=False)``: the LQ the student sees is the degraded crop itself (the cleanup is never
    called), the teacher answers that; patch i is the same whatever the count."""
    from archive_restore.degrade import Degradation
    from archive_restore.train.data import ImageBank
    from archive_restore.train.upscaler_stage import LQ_PATCH, TeacherCache

    rng = np.random.default_rng(0)
    bank = ImageBank([rng.random((LQ_PATCH * 4 + 8, LQ_PATCH * 4 + 8, 3)).astype(np.float32)], "test")

    def no_cleanup(*_):
        raise AssertionError("the cleanup ran on a raw patch")

    teacher = lambda x: F.interpolate(x, scale_factor=4, mode="nearest")  # noqa: E731
    blind = lambda x: torch.zeros(x.shape[0], 4)  # noqa: E731
    raw = TeacherCache(tmp_path / "raw", 2, seed=5, clean=False)
    raw.build(bank, blind, no_cleanup, lambda: teacher, progress=False)
    lq, target = raw.load()
    r = np.random.default_rng([5, 1])
    crop = bank.crop(r, LQ_PATCH * 4)
    low = np.clip(Degradation.sample(r, scale=4).apply(crop), 0, 1)
    assert torch.allclose(lq[1], torch.from_numpy(low).permute(2, 0, 1).half().float())
    assert target.shape == (2, 3, LQ_PATCH * 4, LQ_PATCH * 4)
    more = TeacherCache(tmp_path / "more", 3, seed=5, clean=False)
    more.build(bank, blind, no_cleanup, lambda: teacher, progress=False)
    assert torch.equal(more.load()[0][:2], lq)


def test_training_autocasts_only_in_bf16_and_only_where_it_is_fast(monkeypatch):
    from archive_restore.compute import cpu

    monkeypatch.setattr(cpu, "half_speedups", lambda: {torch.float16: 3.0, torch.bfloat16: 3.2})
    assert cpu.training_autocast_dtype() is torch.bfloat16
    monkeypatch.setattr(cpu, "half_speedups", lambda: {torch.float16: 3.0, torch.bfloat16: 1.2})
    assert cpu.training_autocast_dtype() is None  # fp16 is fast here, but never for training


def test_train_cli_defects_resumes_and_exports_the_detector(tiny_data, tmp_path):
    models, work = tmp_path / "models", tmp_path / "work"
    args = ["--data", str(tiny_data), "--models-dir", str(models), "--work-dir", str(work), "--device", "cpu",
            "--batch", "2"]
    runner = CliRunner()
    result = runner.invoke(cli, ["train", "defects", "--steps", "1", *args])
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["train", "defects", "--steps", "3", *args])
    assert result.exit_code == 0, result.output
    assert "defects: step 3" in result.output  # resumed at step 1
    ckpt = load_checkpoint(models / "defects.safetensors", expect="DefectNet")
    assert ckpt.info["steps"] == 3 and "synthetic print damage" in ckpt.info["data"]


def test_the_detectors_examples_are_crops_of_a_photo_damaged_at_its_own_size():
    """Damage is drawn over the whole photo (a tear sized to the photo, as bench defects and real prints have it),
    then a CROP square is cut from it, a quarter of the time at one of the photo's corners (where tears are)."""
    from archive_restore.train.defects_stage import CROP, crop_at, damaged_example

    rng = np.random.default_rng(0)
    clean = _smooth_image(rng, 300, 200).astype(np.float32) / 255
    examples = [damaged_example(clean, np.random.default_rng(i)) for i in range(12)]
    assert all(x.shape == (CROP, CROP) and y.shape == (CROP, CROP) for x, y in examples)
    assert any(y.sum() == 0 for _, y in examples) and any(y.sum() > 20 for _, y in examples)
    corners = {(0, 0), (0, 200 - CROP), (300 - CROP, 0), (300 - CROP, 200 - CROP)}
    places = [crop_at((300, 200), np.random.default_rng(i)) for i in range(400)]
    assert all(0 <= y <= 300 - CROP and 0 <= x <= 200 - CROP for y, x in places)
    assert 0.18 < np.mean([p in corners for p in places]) < 0.35
    assert len(set(places)) > 100


def test_train_cli_faces_resumes_and_exports_our_face_restorer(tiny_data, tmp_path):
    from archive_restore.faces.restore import load_own_face_restorer

    models, work = tmp_path / "models", tmp_path / "work"
    args = ["--data", str(tiny_data), "--models-dir", str(models), "--work-dir", str(work), "--device", "cpu",
            "--batch", "2"]
    runner = CliRunner()
    assert runner.invoke(cli, ["train", "faces", "--steps", "1", *args]).exit_code == 0
    result = runner.invoke(cli, ["train", "faces", "--steps", "2", *args])
    assert result.exit_code == 0, result.output
    assert "faces: step 2" in result.output  # resumed at step 1
    ckpt = load_checkpoint(models / "face_net.safetensors", expect="FaceNet")
    assert ckpt.info["steps"] == 2 and ckpt.info["scales"] == [2, 4] and "faces256 held out" in ckpt.info["data"]
    restorer = load_own_face_restorer([models])
    out = restorer.restore(np.random.default_rng(0).random((2, 96, 96, 3), dtype=np.float32))
    assert out.shape == (2, 512, 512, 3) and 0 <= out.min() and out.max() <= 1


def test_our_face_restorers_examples_are_degraded_faces_beside_their_hq_face(tiny_data):
    from archive_restore.train.faces_stage import face_batch

    lq, hq = face_batch(FaceBank(tiny_data / "hq_faces", 64), np.random.default_rng(3), 4)
    assert lq.shape == hq.shape == (4, 3, 64, 64)
    assert 0.005 < float((lq - hq).abs().mean()) < 0.3  # degraded, yet the same face
