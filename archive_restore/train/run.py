"""The training driver: builds data, networks and optimiser for a stage, resumes its state, runs it
and exports the result as a self-describing checkpoint in the models folder."""
from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import ArchiveRestoreError, DataError
from ..nets import (
    BlindDegEncoder,
    DegEncoder,
    DegSynth,
    build_cleanup,
    build_condsr,
    load_checkpoint,
    save_checkpoint,
)
from ..weights.folders import MODEL_FILES
from .cleanup_stage import CleanupStep
from .data import HELD_OUT_FACES, FaceBank, ImageBank, load_real_pairs
from .degradation_stage import DegradationStep, code_spread, make_param_head
from .distill_stage import DistillStep
from .loop import Budget, RunState, load_state, run_steps, save_state, seed_everything
from .sr_stage import RestorerStep

FACE_SIZE = 128  # encoders see aligned faces at this size
SR_CROP = 128    # HQ natural crop for the restorer (LQ patch = SR_CROP / 4)
CLEANUP_CROP = 192  # HQ natural crop for the cleanup (LQ patch 48 px: room for its receptive field)


@dataclass
class TrainConfig:
    data: Path            # e.g. ../shared/data/train
    models_dir: Path      # where finished checkpoints go (and stage 2/3 find stage 1's)
    work_dir: Path        # resumable training states
    budget: Budget
    seed: int = 0
    device: str = "cpu"
    batch: int = 16
    lr: float = 1e-3
    code_dim: int = 128
    size: str = "compact"


def _folders(cfg: TrainConfig) -> dict[str, Path]:
    return {
        "naturals": cfg.data / "hq_natural",
        "faces": cfg.data / "hq_faces",
        "real_pairs": cfg.data / "real_face_pairs",
        "real_pairs_more": cfg.data / "real_face_pairs_more",
    }


def _banks(cfg: TrainConfig, crop: int):
    folders = _folders(cfg)
    for key in ("naturals", "faces"):
        if not folders[key].is_dir():
            raise DataError(f"training data folder {folders[key]} not found; pass --data pointing at a folder with hq_natural/ and hq_faces/")
    faces = FaceBank(folders["faces"], FACE_SIZE)
    naturals = ImageBank.from_folder(folders["naturals"], crop)
    pairs = load_real_pairs([folders["real_pairs"], folders["real_pairs_more"]], FACE_SIZE)
    return faces, naturals, pairs


def _info(cfg: TrainConfig, stage: str, state: RunState, faces, naturals, pairs, **extra) -> dict:
    return {
        "stage": stage,
        "steps": state.step,
        "train_seconds": round(state.seconds, 1),
        "device": cfg.device,
        "machine": f"{platform.machine()} {torch.get_num_threads()} threads",
        "batch": cfg.batch,
        "lr": cfg.lr,
        "seed": cfg.seed,
        "losses": {k: round(v, 5) for k, v in state.losses.items()},
        "data": {
            "hq_natural": f"{naturals.source} ({len(naturals)} images)",
            "hq_faces": f"{faces.source} ({len(faces)} faces; {HELD_OUT_FACES} held out)",
            "real_face_pairs": f"{len(pairs)} real LQ/HQ face pairs from real_face_pairs, real_face_pairs_more",
        },
        **extra,
    }


def _modules_to(device: str, *modules: torch.nn.Module) -> None:
    for m in modules:
        m.to(device).train()


def train_degradation(cfg: TrainConfig) -> RunState:
    """Stage 1: DegEncoder + DegSynth (+ a parameter head kept only in the training state)."""
    seed_everything(cfg.seed)
    faces, naturals, pairs = _banks(cfg, FACE_SIZE)
    encoder, synth, head = DegEncoder(code_dim=cfg.code_dim), DegSynth(code_dim=cfg.code_dim), make_param_head(cfg.code_dim)
    _modules_to(cfg.device, encoder, synth, head)
    modules = {"encoder": encoder, "synth": synth, "head": head}
    optimizer = torch.optim.Adam([p for m in modules.values() for p in m.parameters()], lr=cfg.lr)
    state_path = cfg.work_dir / "degradation.state"
    state = load_state(state_path, modules, optimizer)
    step = DegradationStep(encoder, synth, head, optimizer, faces, naturals, pairs, cfg.seed, cfg.batch)

    def checkpoint(s: RunState) -> None:
        save_state(state_path, modules, optimizer, s)

    state = run_steps("degradation", cfg.budget, state, optimizer, cfg.lr, step, checkpoint)
    encoder.eval()
    spread = code_spread(encoder, faces, naturals, cfg.seed)
    info = _info(cfg, "degradation", state, faces, naturals, pairs, code_check=spread)
    save_checkpoint(encoder, cfg.models_dir / MODEL_FILES["deg_encoder"], info)
    save_checkpoint(synth, cfg.models_dir / MODEL_FILES["deg_synth"], info)
    return state


def _frozen(path: Path, device: str, expect: str) -> torch.nn.Module:
    model = load_checkpoint(path, device, expect=expect).model
    model.requires_grad_(False)
    return model


def train_restorer(cfg: TrainConfig, conditioned: bool = True) -> RunState:
    """Stage 2: CondSR (or its unconditioned twin) on the same batches."""
    seed_everything(cfg.seed)
    faces, naturals, pairs = _banks(cfg, SR_CROP)
    encoder = _frozen(cfg.models_dir / MODEL_FILES["deg_encoder"], cfg.device, "DegEncoder")
    synth = _frozen(cfg.models_dir / MODEL_FILES["deg_synth"], cfg.device, "DegSynth")
    model = build_condsr(cfg.size, cfg.code_dim, conditioned=conditioned).to(cfg.device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    key = "condsr" if conditioned else "condsr_uncond"
    state_path = cfg.work_dir / f"{key}_{cfg.size}.state"
    state = load_state(state_path, {"model": model}, optimizer)
    step = RestorerStep(model, optimizer, encoder, synth, faces, naturals, pairs, cfg.seed, cfg.batch, SR_CROP, scale=model.scale)

    def checkpoint(s: RunState) -> None:
        save_state(state_path, {"model": model}, optimizer, s)

    state = run_steps(key, cfg.budget, state, optimizer, cfg.lr, step, checkpoint)
    info = _info(cfg, key, state, faces, naturals, pairs, size=cfg.size, scale=model.scale)
    save_checkpoint(model, cfg.models_dir / MODEL_FILES[f"{key}_{cfg.size}"], info)
    return state


def train_blind(cfg: TrainConfig) -> RunState:
    """Stage 3: BlindDegEncoder distilled to DegEncoder's codes, through the frozen CondSR too."""
    seed_everything(cfg.seed)
    faces, naturals, pairs = _banks(cfg, FACE_SIZE)
    teacher = _frozen(cfg.models_dir / MODEL_FILES["deg_encoder"], cfg.device, "DegEncoder")
    restorer = _frozen(cfg.models_dir / MODEL_FILES[f"condsr_{cfg.size}"], cfg.device, "CondSR")
    blind = BlindDegEncoder(code_dim=cfg.code_dim).to(cfg.device).train()
    optimizer = torch.optim.Adam(blind.parameters(), lr=cfg.lr)
    state_path = cfg.work_dir / "blind.state"
    state = load_state(state_path, {"blind": blind}, optimizer)
    step = DistillStep(blind, optimizer, teacher, restorer, faces, naturals, cfg.seed, cfg.batch)

    def checkpoint(s: RunState) -> None:
        save_state(state_path, {"blind": blind}, optimizer, s)

    state = run_steps("blind", cfg.budget, state, optimizer, cfg.lr, step, checkpoint)
    save_checkpoint(blind, cfg.models_dir / MODEL_FILES["blind_encoder"], _info(cfg, "blind", state, faces, naturals, pairs))
    return state


def train_cleanup(cfg: TrainConfig) -> RunState:
    """Stage 4: the cleanup (x1, code-conditioned) on the restorer's pairs, with imperfect codes mixed in."""
    seed_everything(cfg.seed)
    faces, naturals, pairs = _banks(cfg, CLEANUP_CROP)
    encoder = _frozen(cfg.models_dir / MODEL_FILES["deg_encoder"], cfg.device, "DegEncoder")
    synth = _frozen(cfg.models_dir / MODEL_FILES["deg_synth"], cfg.device, "DegSynth")
    blind = _frozen(cfg.models_dir / MODEL_FILES["blind_encoder"], cfg.device, "BlindDegEncoder")
    model = build_cleanup(cfg.size, cfg.code_dim).to(cfg.device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    key = f"cleanup_{cfg.size}"
    state_path = cfg.work_dir / f"{key}.state"
    state = load_state(state_path, {"model": model}, optimizer)
    source = RestorerStep(None, None, encoder, synth, faces, naturals, pairs, cfg.seed, cfg.batch, CLEANUP_CROP)
    step = CleanupStep(model, optimizer, source, blind)

    def checkpoint(s: RunState) -> None:
        save_state(state_path, {"model": model}, optimizer, s)

    state = run_steps("cleanup", cfg.budget, state, optimizer, cfg.lr, step, checkpoint)
    info = _info(cfg, "cleanup", state, faces, naturals, pairs, size=cfg.size, scale=1, crop=CLEANUP_CROP)
    save_checkpoint(model, cfg.models_dir / MODEL_FILES[key], info)
    return state


def train_faces(cfg: TrainConfig) -> RunState:
    """Our face restorer (``nets.face_net.FaceNet``) on the aligned HQ faces (``train.faces_stage``); written to
    ``models_dir/face_net.safetensors``."""
    from ..compute.cpu import training_autocast_dtype
    from ..nets.face_net import FACE_NET_SIZE, FaceNet
    from .faces_stage import SCALES, FaceStep

    seed_everything(cfg.seed)
    folder = _folders(cfg)["faces"]
    if not folder.is_dir():
        raise DataError(f"{folder} not found: our face restorer trains on aligned HQ faces")
    faces = FaceBank(folder, FACE_NET_SIZE)
    model = FaceNet().to(cfg.device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    state_path = cfg.work_dir / "face_net.state"
    state = load_state(state_path, {"model": model}, optimizer)
    autocast = training_autocast_dtype() if cfg.device == "cpu" else None
    step = FaceStep(model, optimizer, faces, cfg.seed, cfg.batch, cfg.device, autocast)

    def checkpoint(s: RunState) -> None:
        save_state(state_path, {"model": model}, optimizer, s)

    state = run_steps("faces", cfg.budget, state, optimizer, cfg.lr, step, checkpoint)
    info = {"stage": "faces", "steps": state.step, "train_seconds": round(state.seconds, 1), "batch": cfg.batch,
            "lr": cfg.lr, "size": FACE_NET_SIZE, "scales": list(SCALES),
            "autocast": str(autocast).replace("torch.", "") if autocast else "fp32",
            "losses": {k: round(v, 5) for k, v in state.losses.items()},
            "data": f"{faces.source} ({len(faces)} aligned faces, {HELD_OUT_FACES} held out), degraded by our chain"}
    save_checkpoint(model, cfg.models_dir / MODEL_FILES["face_net"], info)
    return state


STUDENT_FILE = "restore_compact_x4.safetensors"  # our compact upscaler, in the models folder


def train_upscaler(cfg: TrainConfig, teacher: str = "RealESRGAN_x4plus", init: str | None = "realesr-animevideov3",
                   patches: int = 2048, progress: bool = True, raw_patches: int = 0) -> RunState:
    """Stage 5: our compact upscaler (SRVGG 64 x 16), distilled from ``teacher`` (a known upscaler name or a
    file) on patches degraded, read and cleaned as the jobs do; started from ``init``'s weights when that
    upscaler is at hand. Written as ``STUDENT_FILE`` (Real-ESRGAN's own key layout, so every upscaler
    runtime runs it) with what it was made from in its header."""
    from ..nets.realesrgan import SRVGGNetCompact
    from ..upscalers.upscaler import load_upscaler, resolve_upscaler
    from .upscaler_stage import LQ_PATCH, StudentStep

    seed_everything(cfg.seed)
    lq, target, naturals, teacher_ref = _teacher_data(cfg, teacher, patches, raw_patches, progress)
    student = SRVGGNetCompact(16, 64, 4)
    started_from = "random weights"
    if init:
        try:
            start = resolve_upscaler(init, [cfg.models_dir])
            student.load_state_dict(load_upscaler(start, "cpu", runtime="torch", progress=False).model.state_dict())
            started_from = f"{start.name} ({start.source}, sha256 {start.sha256})"
        except (ArchiveRestoreError, RuntimeError) as exc:  # absent, or not the student's layout
            started_from = f"random weights ({init} not used: {exc})"
    student.to(cfg.device).train().requires_grad_(True)
    optimizer = torch.optim.Adam(student.parameters(), lr=cfg.lr)
    state_path = cfg.work_dir / "upscaler.state"
    state = load_state(state_path, {"student": student}, optimizer)
    step = StudentStep(student, optimizer, lq.to(cfg.device), target.to(cfg.device), cfg.seed, cfg.batch)

    def checkpoint(s: RunState) -> None:
        save_state(state_path, {"student": student}, optimizer, s)

    state = run_steps("upscaler", cfg.budget, state, optimizer, cfg.lr, step, checkpoint)
    info = {"stage": "upscaler", "steps": state.step, "train_seconds": round(state.seconds, 1), "device": cfg.device,
            "machine": f"{platform.machine()} {torch.get_num_threads()} threads", "batch": cfg.batch, "lr": cfg.lr,
            "seed": cfg.seed, "losses": {k: round(v, 5) for k, v in state.losses.items()},
            "teacher": f"{teacher_ref.name} ({teacher_ref.source}, sha256 {teacher_ref.sha256})",
            "started_from": started_from, "patches": f"{patches} of {LQ_PATCH}x{LQ_PATCH} LQ from {naturals.source} "
            f"({len(naturals)} images), degraded by our model, cleaned by cleanup_{cfg.size} with blind codes"
            + (f"; {raw_patches} more degraded and not cleaned" if raw_patches else ""),
            "licence": "derived from Real-ESRGAN's weights (BSD-3-Clause): the teacher's outputs and the starting "
                       "weights; trained by archive-restore's own code"}
    export_student(student, cfg.models_dir / STUDENT_FILE, info)
    return state


def _teacher_data(cfg: TrainConfig, teacher: str, patches: int, raw_patches: int, progress: bool):
    """What both upscaler stages learn from: the cached (LQ, teacher's answer) pairs, ``patches`` cleaned as the
    jobs clean them and ``raw_patches`` degraded but not cleaned (``upscaler_targets_raw``), made where missing,
    as one set; with the image bank and the teacher's ref they came from."""
    from ..upscalers.upscaler import load_upscaler, resolve_upscaler
    from .upscaler_stage import LQ_PATCH, TeacherCache

    folders = _folders(cfg)
    if not folders["naturals"].is_dir():
        raise DataError(f"training data folder {folders['naturals']} not found; pass --data pointing at a folder "
                        "with hq_natural/")
    naturals = ImageBank.from_folder(folders["naturals"], LQ_PATCH * 4)
    blind = _frozen(cfg.models_dir / MODEL_FILES["blind_encoder"], "cpu", "BlindDegEncoder")
    cleanup = _frozen(cfg.models_dir / MODEL_FILES[f"cleanup_{cfg.size}"], "cpu", "Cleanup")
    teacher_ref = resolve_upscaler(teacher, [cfg.models_dir])
    if teacher_ref.path is None:
        raise DataError(f"--teacher {teacher}: no upscaler file to distil from")

    pairs = []
    for folder, count, clean in (("upscaler_targets", patches, True), ("upscaler_targets_raw", raw_patches, False)):
        if count:
            cache = TeacherCache(cfg.work_dir / folder, count, cfg.seed + (0 if clean else 1), clean)
            cache.build(naturals, blind, cleanup, lambda: load_upscaler(teacher_ref, "cpu", progress=progress),
                        progress)
            pairs.append(cache.load())
    return torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs]), naturals, teacher_ref


def train_upscaler_gan(cfg: TrainConfig, teacher: str = "RealESRGAN_x4plus", patches: int = 2048,
                       progress: bool = True, snapshot_every: int = 200, raw_patches: int = 0) -> RunState:
    """Stage 6: the GAN stage of the compact upscaler, from the L1 student in ``--models-dir`` (stage 5's
    output): L1 + gradient L1 + the teacher's features + a patch discriminator that takes the teacher's answers
    for real, with an EMA of the weights (``upscaler_stage.GanStudentStep``). Every ``snapshot_every`` steps the
    EMA is written to ``work_dir/upscaler_gan/step-NNNNN.safetensors`` so that a checkpoint can be chosen by
    NIQE and PSNR; at the end the EMA replaces ``STUDENT_FILE``."""
    import copy
    import json

    from safetensors import safe_open

    from ..compute.cpu import training_autocast_dtype
    from ..nets.realesrgan import RRDBNet, SRVGGNetCompact
    from ..upscalers.upscaler import load_upscaler, resolve_upscaler
    from .upscaler_stage import (
        DISC_LR_SCALE,
        GAN_WEIGHT,
        LQ_PATCH,
        PERCEPTUAL_WEIGHT,
        PIXEL_WEIGHT,
        GanStudentStep,
        PatchDiscriminator,
        TeacherFeatures,
    )

    seed_everything(cfg.seed)
    start_file = cfg.models_dir / STUDENT_FILE
    if not start_file.is_file():
        raise DataError(f"{start_file} not found: the GAN stage starts from the L1 student; run `archive-restore "
                        "train upscaler` first (same --models-dir)")
    lq, target, naturals, teacher_ref = _teacher_data(cfg, teacher, patches, raw_patches, progress)
    rrdb = load_upscaler(teacher_ref, "cpu", runtime="torch", progress=False).model
    if not isinstance(rrdb, RRDBNet):
        raise DataError(f"--teacher {teacher}: the GAN stage's perceptual term needs an RRDBNet teacher (x4plus)")
    features = TeacherFeatures(rrdb).float().to(cfg.device)
    with safe_open(str(start_file), "pt") as f:
        header = json.loads((f.metadata() or {}).get("archive_restore", "{}"))
    l1_info = header.get("l1_stage", header)  # a resumed run finds its own export there: the L1 stage's inside
    student = SRVGGNetCompact(16, 64, 4)
    student.load_state_dict(load_upscaler(resolve_upscaler(str(start_file)), "cpu", runtime="torch",
                                          progress=False).model.state_dict())
    student.to(cfg.device).train().requires_grad_(True)
    ema = copy.deepcopy(student).requires_grad_(False)
    disc = PatchDiscriminator().to(cfg.device).train()
    optimizer = torch.optim.Adam([{"params": student.parameters()},
                                  {"params": disc.parameters(), "lr_scale": DISC_LR_SCALE}], lr=cfg.lr, betas=(0.9, 0.99))
    state_path = cfg.work_dir / "upscaler_gan.state"
    modules = {"student": student, "ema": ema, "disc": disc}
    state = load_state(state_path, modules, optimizer)
    autocast = training_autocast_dtype() if cfg.device == "cpu" else None
    step = GanStudentStep(student, ema, disc, features, optimizer, lq.to(cfg.device), target.to(cfg.device),
                          cfg.seed, cfg.batch, autocast)

    def info(s: RunState) -> dict:
        return {"stage": "upscaler-gan", "steps": s.step, "l1_stage_steps": l1_info.get("steps"),
                "teacher": l1_info.get("teacher"), "licence": l1_info.get("licence"), "l1_stage": l1_info,
                "gan_train_seconds": round(s.seconds, 1), "gan_lr": cfg.lr, "gan_batch": cfg.batch,
                "gan_losses": {k: round(v, 5) for k, v in s.losses.items()},
                "gan_autocast": str(autocast).replace("torch.", "") if autocast else "fp32",
                "gan_recipe": f"L1 + gradient L1 to x4plus (weight {PIXEL_WEIGHT} each), L1 of x4plus's first-layer "
                              f"features (weight {PERCEPTUAL_WEIGHT}), patch-discriminator GAN (weight {GAN_WEIGHT}, "
                              f"x4plus's answers as real, its lr x {DISC_LR_SCALE}), EMA 0.995",
                "patches": f"{patches} of {LQ_PATCH}x{LQ_PATCH} LQ from {naturals.source} ({len(naturals)} images), degraded by "
                           f"our model, cleaned by cleanup_{cfg.size} with blind codes; {raw_patches} more degraded "
                           "and not cleaned"}

    def checkpoint(s: RunState) -> None:
        save_state(state_path, modules, optimizer, s)
        if s.step % snapshot_every == 0 and s.step:
            export_student(ema, cfg.work_dir / "upscaler_gan" / f"step-{s.step:05d}.safetensors", info(s))

    state = run_steps("upscaler-gan", cfg.budget, state, optimizer, cfg.lr, step, checkpoint)
    export_student(ema, cfg.models_dir / STUDENT_FILE, info(state))
    return state


def train_defects(cfg: TrainConfig) -> RunState:
    """The defect detector (``nets.defects.DefectNet``) on HQ natural crops and faces with synthetic print damage
    (``train.defects_stage``); written to ``models_dir/defects.safetensors``."""
    from ..nets.defects import DefectNet
    from .defects_stage import CROP, DETECTOR_DEPTH, DefectStep

    seed_everything(cfg.seed)
    folders = _folders(cfg)
    if not folders["naturals"].is_dir():
        raise DataError(f"{folders['naturals']} not found: the defect detector trains on HQ natural photos")
    bank = ImageBank.from_folder(folders["naturals"], CROP)
    model = DefectNet(depth=DETECTOR_DEPTH).to(cfg.device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    state_path = cfg.work_dir / "defects.state"
    state = load_state(state_path, {"model": model}, optimizer)
    step = DefectStep(model, optimizer, bank, cfg.seed, cfg.batch, cfg.device)

    def checkpoint(s: RunState) -> None:
        save_state(state_path, {"model": model}, optimizer, s)

    state = run_steps("defects", cfg.budget, state, optimizer, cfg.lr, step, checkpoint)
    info = {"stage": "defects", "steps": state.step, "train_seconds": round(state.seconds, 1), "batch": cfg.batch,
            "lr": cfg.lr, "crop": CROP, "losses": {k: round(v, 5) for k, v in state.losses.items()},
            "data": f"{bank.source} ({len(bank)} images) with synthetic print damage (degrade.defects) drawn over "
                    "the whole photo, a crop of it (a quarter at a corner), then our degradation chain at scale 1 "
                    "(light or medium, its dust and scratches left out)"}
    save_checkpoint(model, cfg.models_dir / MODEL_FILES["defects"], info)
    return state


def export_student(student: torch.nn.Module, path: Path, info: dict) -> None:
    """The student's weights in Real-ESRGAN's SRVGG key layout, with ``info`` (JSON) in the file's header;
    written to a temporary name and renamed."""
    import json

    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().float().cpu().contiguous() for k, v in student.state_dict().items()}
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.safetensors")
    save_file(state, str(tmp), metadata={"archive_restore": json.dumps(info)})
    os.replace(tmp, path)
