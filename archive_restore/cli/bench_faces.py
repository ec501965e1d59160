"""``archive-restore bench faces`` (on the ``bench`` group; ``cli/bench.py`` is full)."""
from __future__ import annotations

from pathlib import Path

import click

from .bench import bench
from .options import models_dir_option, shared_default, write_json


@bench.command("faces")
@click.option("--faces", type=click.Path(path_type=Path), **shared_default("train", "hq_faces", "faces256"),
              help="Held-out aligned HQ faces.")
@click.option("--seed", type=int, default=7, show_default=True)
@click.option("--repeats", type=click.IntRange(min=1), default=3, show_default=True,
              help="Degradations drawn per face and shrink.")
@click.option("--device", default="cpu", show_default=True, help="auto, cpu or cuda.")
@models_dir_option
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None, help="Also write the figures here.")
def bench_faces(faces, seed, repeats, device, models_dirs, json_path) -> None:
    """Face restorers on held-out faces: each aligned HQ face shrunk 4 or 8 times by a degradation of our chain
    and enlarged back as the job's alignment does; PSNR-Y and SSIM-Y of that enlargement (bicubic), of our face
    restorer (`--face-restorer ours`) and, when its file is present, of GFPGAN."""
    from ..bench.faces import face_restorers, format_faces, measure_faces
    from ..compute.device import resolve_device

    rows = measure_faces(Path(faces), face_restorers(models_dirs, resolve_device(device)), seed, repeats)
    click.echo(format_faces(rows))
    write_json(json_path, {"faces": [vars(r) for r in rows]})
