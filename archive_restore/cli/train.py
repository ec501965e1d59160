"""``train``: our networks, trained by our own code on the data in ``../shared/data/train``."""
from __future__ import annotations

from pathlib import Path

import click

from .options import shared_default


@click.command()
@click.argument("stage", type=click.Choice(["degradation", "restorer", "uncond", "blind", "cleanup", "all",
                                           "upscaler", "upscaler-gan", "defects", "faces"]))
@click.option("--data", type=click.Path(path_type=Path), **shared_default("train"),
              help="Training data: a folder with hq_natural/, hq_faces/ and real_face_pairs*/.")
@click.option("--models-dir", type=click.Path(path_type=Path), default=Path("models"), show_default=True,
              help="Where finished checkpoints are written (and where later stages find earlier ones).")
@click.option("--work-dir", type=click.Path(path_type=Path), default=Path("runs/train"), show_default=True,
              help="Resumable training states; rerunning the same command carries on from them.")
@click.option("--steps", type=int, default=2000, show_default=True, help="Total optimisation steps of the stage.")
@click.option("--minutes", type=float, default=None, help="Stop (resumably) after this much wall time.")
@click.option("--batch", type=int, default=16, show_default=True)
@click.option("--lr", type=float, default=1e-3, show_default=True)
@click.option("--size", type=click.Choice(["compact", "large"]), default="compact", show_default=True,
              help="Restorer size: compact for CPU, large for GPU.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
@click.option("--teacher", default="RealESRGAN_x4plus", show_default=True, metavar="NAME|PATH",
              help="upscaler: the upscaler the student learns from (a known name or a file).")
@click.option("--patches", type=click.IntRange(min=1), default=2048, show_default=True,
              help="upscaler: training patches, each answered once by the teacher (cached in --work-dir).")
@click.option("--raw-patches", type=click.IntRange(min=0), default=0, show_default=True,
              help="upscaler, upscaler-gan: more patches, degraded but not cleaned (what the cleanup leaves on real scans), "
                   "each answered once by the teacher.")
def train(stage, data, models_dir, work_dir, steps, minutes, batch, lr, size, seed, device, teacher, patches,
          raw_patches) -> None:
    """Train the networks, following ReDegNet: degradation (DegEncoder + DegSynth), restorer (CondSR),
    uncond (its unconditioned twin, same batches), blind (BlindDegEncoder distilled), cleanup (the x1
    code-conditioned cleanup before the upscaler), or all in order; and upscaler (our compact x4
    upscaler, distilled from --teacher; not part of all: it needs the teacher's file), then upscaler-gan
    (its GAN stage: the teacher's features and a discriminator, from the upscaler stage's file); defects (the
    detector of scratches, cracks, dust, creases and tears in photos, on synthetic damage); faces (our face
    restorer, for --face-restorer ours, on aligned HQ faces)."""
    from ..compute.device import resolve_device
    from ..train import (
        Budget,
        TrainConfig,
        train_blind,
        train_cleanup,
        train_degradation,
        train_restorer,
    )
    from ..train.run import train_defects, train_faces, train_upscaler, train_upscaler_gan

    cfg = TrainConfig(data=data, models_dir=models_dir, work_dir=work_dir, budget=Budget(steps, minutes), seed=seed,
                      device=str(resolve_device(device)), batch=batch, lr=lr, size=size)
    runs = {
        "degradation": [train_degradation],
        "restorer": [train_restorer],
        "uncond": [lambda c: train_restorer(c, conditioned=False)],
        "blind": [train_blind],
        "cleanup": [train_cleanup],
        "all": [train_degradation, train_restorer, lambda c: train_restorer(c, conditioned=False), train_blind,
                train_cleanup],
        "upscaler": [lambda c: train_upscaler(c, teacher=teacher, patches=patches, raw_patches=raw_patches)],
        "upscaler-gan": [lambda c: train_upscaler_gan(c, teacher=teacher, patches=patches, raw_patches=raw_patches)],
        "defects": [train_defects],
        "faces": [train_faces],
    }[stage]
    for fn in runs:
        state = fn(cfg)
        click.echo(f"{stage}: step {state.step}, {state.seconds:.0f} s of training, losses {state.losses}")
