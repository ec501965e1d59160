"""The command line. This is the one place where errors become messages and exit codes:
0 all done, 1 something failed, 2 usage errors."""
from __future__ import annotations

import json
from pathlib import Path

import click

from .errors import ArchiveRestoreError
from .paths import SHARED_DATA


class _Group(click.Group):
    """Turns the library's exceptions into one-line messages with the exception's exit code."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except ArchiveRestoreError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)


@click.group(cls=_Group)
@click.version_option(package_name="archive-restore")
def cli() -> None:
    """Restore old photo collections and old videos with degradation codes learned from real faces."""


def _write_json(path: Path | None, data: dict) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        click.echo(f"wrote {path}")


# ---------------------------------------------------------------------------------------------- train
@cli.command()
@click.argument("stage", type=click.Choice(["degradation", "restorer", "uncond", "blind", "all"]))
@click.option("--data", type=click.Path(path_type=Path), default=SHARED_DATA / "train", show_default=True,
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
def train(stage, data, models_dir, work_dir, steps, minutes, batch, lr, size, seed, device) -> None:
    """Train the networks, following ReDegNet: degradation (DegEncoder + DegSynth), restorer (CondSR),
    uncond (its unconditioned twin, same batches), blind (BlindDegEncoder distilled), or all in order."""
    from .device import resolve_device
    from .train import Budget, TrainConfig, train_blind, train_degradation, train_restorer

    cfg = TrainConfig(data=data, models_dir=models_dir, work_dir=work_dir, budget=Budget(steps, minutes), seed=seed,
                      device=str(resolve_device(device)), batch=batch, lr=lr, size=size)
    runs = {
        "degradation": [train_degradation],
        "restorer": [train_restorer],
        "uncond": [lambda c: train_restorer(c, conditioned=False)],
        "blind": [train_blind],
        "all": [train_degradation, train_restorer, lambda c: train_restorer(c, conditioned=False), train_blind],
    }[stage]
    for fn in runs:
        state = fn(cfg)
        click.echo(f"{stage}: step {state.step}, {state.seconds:.0f} s of training, losses {state.losses}")


# ---------------------------------------------------------------------------------------------- bench
@cli.group()
def bench() -> None:
    """Benchmarks that print their figures (and write them as JSON)."""


@bench.command("quality")
@click.option("--images", type=click.Path(path_type=Path), default=SHARED_DATA / "eval" / "hq_natural", show_default=True,
              help="Held-out HQ natural images (recursive).")
@click.option("--faces", type=click.Path(path_type=Path), default=SHARED_DATA / "train" / "hq_faces" / "faces256",
              show_default=True, help="Held-out aligned HQ faces (training leaves this folder out).")
@click.option("--degradations", type=int, default=12, show_default=True, help="Sampled degradations K.")
@click.option("--scale", type=click.Choice(["4"]), default="4", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--crop", type=int, default=256, show_default=True, help="Central HQ crop per image.")
@click.option("--max-images", type=int, default=None, help="Use only the first N images.")
@click.option("--models-dir", "models_dirs", multiple=True, type=click.Path(path_type=Path),
              help="Folders searched first for the networks (repeatable).")
@click.option("--compare", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Any x4 SR model file spandrel loads (Real-ESRGAN, SwinIR, BSRGAN...): adds a row (repeatable).")
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None, help="Also write the figures here.")
def bench_quality(images, faces, degradations, scale, seed, crop, max_images, models_dirs, compare, json_path) -> None:
    """Face code -> natural image: PSNR-Y/SSIM of bicubic, the unconditioned twin, CondSR with the face
    code, the blind code and the oracle code, and face -> natural code retrieval."""
    from .bench import QualityConfig, format_table, run_quality

    cfg = QualityConfig(images=images, faces=faces, degradations=degradations, scale=int(scale), seed=seed, crop=crop,
                        max_images=max_images, models=models_dirs, compare=compare)
    result = run_quality(cfg)
    click.echo(format_table(result))
    _write_json(json_path, result)


def main() -> None:
    cli(prog_name="archive-restore")


if __name__ == "__main__":
    main()
