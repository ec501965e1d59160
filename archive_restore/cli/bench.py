"""``bench``: the benchmark commands; each prints its figures (and writes them as JSON with ``--json``). The
measuring is in ``archive_restore.bench``."""
from __future__ import annotations

from pathlib import Path

import click

from .options import (
    models_dir_option,
    on_cpu,
    shared_default,
    upscaler_settings,
    write_json,
)


@click.group()
def bench() -> None:
    """Benchmarks that print their figures (and write them as JSON)."""


@bench.command("quality")
@click.option("--images", type=click.Path(path_type=Path), **shared_default("eval", "hq_natural"),
              help="Held-out HQ natural images (recursive).")
@click.option("--faces", type=click.Path(path_type=Path), **shared_default("train", "hq_faces", "faces256"),
               help="Held-out aligned HQ faces (training leaves this folder out).")
@click.option("--degradations", type=int, default=12, show_default=True, help="Sampled degradations K.")
@click.option("--scale", type=click.Choice(["1", "2", "4"]), default="4", show_default=True,
              help="The output scale. Below 4 the stack has a row per way of getting there (full, reduced, cleanup: "
                   "see `--scale-method` of run and video), each timed.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--crop", type=int, default=256, show_default=True, help="Central HQ crop per image.")
@click.option("--max-images", type=int, default=None, help="Use only the first N images.")
@click.option("--models-dir", "models_dirs", multiple=True, type=click.Path(path_type=Path),
              help="Folders searched first for the networks (repeatable).")
@click.option("--upscaler", "upscalers", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="An x4 upscaler file (spandrel or ncnn .param): adds the rows NAME (alone) and NAME+face_code, "
                   "NAME+blind_code, NAME+oracle_code (the stack), NAME = the file's stem (repeatable).")
@click.option("--fidelity", "fidelities", type=click.FloatRange(0.0, 1.0), multiple=True,
              help="The stack's blend towards CondSR [default: the jobs' default]; repeat it for a row per value.")
@click.option("--precision", "precisions", type=click.Choice(["auto", "fp32"]), multiple=True,
              help="The upscalers' precision on the CPU, as the jobs' --precision [default: auto]; repeat it for "
                   "rows per precision (NAME@fp32, NAME@auto...).")
@click.option("--sheet", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write a PNG of a few crops per method side by side.")
@click.option("--adapt", is_flag=True, help="Also the rows NAME+face_code+adapt: the cleanup fine-tuned for each "
              "degradation on its face, as `run --adapt on` does.")
@click.option("--restored-faces", "restorer", type=click.Choice(["hq", "ours"]), default="hq", show_default=True,
              help="The restored face the face code and --adapt read: hq (the HQ face itself, a perfect face "
                   "restorer) or ours (our face restorer's, as --faces-without-restorer ours; jobs do not adapt to "
                   "our faces: on real photos it did harm, models/MODELS.md).")
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None, help="Also write the figures here.")
def bench_quality(images, faces, degradations, scale, seed, crop, max_images, models_dirs, upscalers, fidelities,
                  precisions, sheet, adapt, restorer, json_path) -> None:
    """Face code -> natural image: PSNR-Y/SSIM/NIQE of bicubic, the unconditioned twin, CondSR with the
    face code, the blind code and the oracle code, each --upscaler alone and in the stack, and face ->
    natural code retrieval."""
    from ..bench.quality import QualityConfig, format_table, run_quality
    from ..pipeline.stack import DEFAULT_FIDELITY

    cfg = QualityConfig(images=images, faces=faces, degradations=degradations, scale=int(scale), seed=seed, crop=crop,
                        max_images=max_images, models=models_dirs, upscalers=upscalers,
                        fidelities=fidelities or (DEFAULT_FIDELITY,), precisions=precisions or ("auto",), sheet=sheet,
                        adapt=adapt, restorer=restorer)
    result = run_quality(cfg)
    click.echo(format_table(result))
    write_json(json_path, result)


@bench.command("steady")
@click.option("--image", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="A still face photo (default: scikit-image's astronaut).")
@click.option("--width", type=click.IntRange(min=32), default=160, show_default=True, help="Photo width in pixels.")
@click.option("--frames", type=click.IntRange(min=2), default=16, show_default=True)
@click.option("--noise", type=click.FloatRange(0.0, 0.5), default=0.03, show_default=True,
              help="Std of the Gaussian noise drawn anew for every frame (0..1 units).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--face-detector", type=click.Choice(["auto", "retinaface", "yunet", "haar"]), default="haar",
              show_default=True)
@click.option("--restorer", type=click.Choice(["auto", "identity"]), default="auto", show_default=True,
              help="auto: GFPGAN when present, else the aligned LQ face stands in; identity: always the LQ face.")
@click.option("--device", default="cpu", show_default=True, help="auto, cpu or cuda.")
@models_dir_option
def bench_steady(image, width, frames, noise, seed, face_detector, restorer, device, models_dirs) -> None:
    """Flicker of a still face in the restored video: frame-to-frame difference of the pasted face,
    frame by frame and steadied along its track (as the video job renders)."""
    from ..bench.steady import default_face, measure, read_face
    from ..pipeline.engine import Engine, EngineOptions

    face = read_face(image, width) if image else default_face(width)
    engine = Engine(EngineOptions(scale=1, device=device, face_detector=face_detector, models_dirs=tuple(models_dirs),
                                  face_restorer="none" if restorer == "identity" else "auto"))
    click.echo("\n".join(measure(engine, face, frames, noise, seed, restorer).lines()))


@bench.command("eta")
@click.argument("clip", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--frames", type=click.IntRange(min=4), default=24, show_default=True,
              help="The clip's first frames that the job renders.")
@click.option("--upscaler", default="auto", show_default=True, metavar="NAME|PATH",
              help="As `video --upscaler` (auto: as `video` picks it on this device).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
@models_dir_option
def bench_eta(clip, frames, upscaler, device, models_dirs) -> None:
    """How true the render bar's remaining time is: a video job on CLIP's first --frames frames, the bar's
    remaining time after each batch against the true remaining time, from 10 % done."""
    from ..bench.eta import measure_eta

    settings = upscaler_settings(upscaler, None, models_dirs, on_cpu(device))
    click.echo("\n".join(measure_eta(clip, frames, settings, models_dirs, device).lines()))


@bench.command("temporal")
@click.argument("clips", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--frames", type=click.IntRange(min=2), default=24, show_default=True,
              help="Each clip's first frames that are restored.")
@click.option("--scale", type=click.Choice(["1", "2", "4"]), default="4", show_default=True)
@click.option("--method", "methods", multiple=True,
              type=click.Choice(["bicubic", "upscaler", "stack", "stack+temporal"]),
              help="Methods to measure (repeatable) [default: all; bicubic always, the ratios' base].")
@click.option("--upscaler", default="auto", show_default=True, metavar="NAME|PATH",
              help="As `video --upscaler` (auto: as `video` picks it on this device).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
@models_dir_option
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None, help="Also write the figures here.")
def bench_temporal(clips, frames, scale, methods, upscaler, device, models_dirs, json_path) -> None:
    """Whole-frame flicker of the restored video: consecutive output frames compared after motion compensation
    (optical flow of the input frames, scaled; occlusions left out), for bicubic, the upscaler alone, the stack
    and the stack with temporal steadying, as ratios to bicubic. CLIPS: video files or folders of frames."""
    from ..bench.temporal import METHODS, format_table, measure_clip
    from ..pipeline.engine import Engine, EngineOptions

    settings = upscaler_settings(upscaler, None, models_dirs, on_cpu(device))
    engine = Engine(EngineOptions(scale=int(scale), device=device, models_dirs=tuple(models_dirs),
                                  face_restorer="none", **settings))
    chosen = ("bicubic", *[m for m in methods if m != "bicubic"]) if methods else METHODS
    results = []
    for clip in clips:
        results.append(measure_clip(engine, clip, frames, chosen))
        click.echo(f"{clip}: done", err=True)
    click.echo(format_table(results, Path(settings.get("upscaler", "condsr")).stem))
    write_json(json_path, {"clips": [vars(r) for r in results]})


@bench.command("defects")
@click.argument("clips", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.option("--photos", type=click.Path(path_type=Path), default=None,
              help="Held-out clean photos for the photo detector's figures (damaged here, seeded) [default without "
                   "CLIPS: ../shared/data/eval/hq_natural].")
@click.option("--max-images", type=click.IntRange(min=1), default=38, show_default=True)
@click.option("--frames", type=click.IntRange(min=3), default=12, show_default=True,
              help="Each clip's first frames.")
@click.option("--seed", type=int, default=7, show_default=True)
@click.option("--threshold", type=click.FloatRange(0.0, 1.0), default=None,
              help="The photo detector's probability threshold [default: its file's own].")
@models_dir_option
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None, help="Also write the figures here.")
def bench_defects(clips, photos, max_images, frames, seed, threshold, models_dirs, json_path) -> None:
    """Damage found and repaired. Photos (`run --defects on`): synthetic print damage on held-out photos, our
    detector against a threshold detector (precision, recall, F1, PSNR inside the damage), and what it flags on
    the clean ones. CLIPS (`video --defects on`): synthetic one-frame dirt on real clips found and filled from
    the frames beside it, synthetic line scratches lasting over the clip found on each frame alone, and the
    share of pixels a clip as it is has changed (video files or folders of frames)."""
    from ..bench.defects import (
        format_lines,
        format_photos,
        format_table,
        measure_clip,
        measure_lines,
        measure_photos,
    )
    from ..paths import SHARED_DATA

    figures: dict = {}
    photos = photos if photos is not None or clips else SHARED_DATA / "eval" / "hq_natural"
    if photos is not None:
        found = measure_photos(Path(photos), models_dirs, max_images, seed, threshold=threshold)
        click.echo(format_photos(found))
        figures["photos"] = vars(found)
    rows = [measure_clip(clip, frames, seed) for clip in clips]
    if rows:
        click.echo(format_table(rows))
        figures["clips"] = [vars(r) for r in rows]
        lines = [measure_lines(clip, frames, seed) for clip in clips]
        click.echo(format_lines(lines))
        figures["line_scratches"] = [vars(r) for r in lines]
    write_json(json_path, figures)


@bench.command("speed")
@click.option("--input", "input_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="A video whose first --frames frames are used (default: a synthetic clip made here).")
@click.option("--size", "sizes", type=click.Choice(["compact", "large"]), multiple=True,
              help="CondSR size (repeatable) [default: compact].")
@click.option("--upscaler", "upscalers", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="An upscaler file: adds a row for the stack with it (cleanup -> upscaler -> CondSR blend), keyed "
                   "by the file's stem (repeatable).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
@click.option("--batch", type=click.IntRange(min=1), default=4, show_default=True, help="Frames per forward pass.")
@click.option("--frames", type=click.IntRange(min=1), default=None, help="Frames measured [default: 48 on CPU, 100 on CUDA].")
@click.option("--width", type=click.IntRange(min=16), default=480, show_default=True, help="Synthetic clip width.")
@click.option("--height", type=click.IntRange(min=16), default=352, show_default=True, help="Synthetic clip height.")
@click.option("--tile", type=click.IntRange(min=32), default=None,
              help="LQ tile [default: the jobs' default, sized to the device's free memory].")
@click.option("--runtime", type=click.Choice(["auto", "torch", "channels-last", "onnxruntime", "ncnn", "half", "bf16"]),
              default=None,
              help="The upscalers' CPU runtime [default: the jobs' choice, auto: half (fp16) or bf16 only where "
                   "they are fast on this CPU and pass the check against fp32].")
@click.option("--precision", "precisions", type=click.Choice(["auto", "fp32"]), multiple=True,
              help="The upscalers' precision on the CPU, as the jobs' --precision [default: auto]; repeat it for "
                   "a row each (NAME@auto, NAME@fp32), measured in the same run.")
@models_dir_option
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None, help="Also write the figures here.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def bench_speed(input_path, sizes, upscalers, device, batch, frames, width, height, tile, runtime, precisions,
                models_dirs, json_path, quiet) -> None:
    """Frames per second: decode, our forward, the eager forward, end to end (the video job's render)
    and a Real-ESRGAN-style per-frame loop with the same networks, for CondSR and for the stack with
    each --upscaler; peak memory."""
    from ..bench.speed import SpeedConfig, format_table, run_speed

    cfg = SpeedConfig(input=input_path, sizes=sizes or ("compact",), upscalers=upscalers, device=device, batch=batch,
                      frames=frames, width=width, height=height, tile=tile, models=models_dirs, progress=not quiet,
                      runtime=runtime, precisions=precisions or ("auto",))
    result = run_speed(cfg)
    click.echo(format_table(result))
    write_json(json_path, result)


@bench.command("runtime")
@click.option("--upscaler", "upscalers", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="An upscaler file (spandrel or ncnn .param; repeatable) [default: every known upscaler present].")
@click.option("--size", type=click.IntRange(min=16), default=128, show_default=True, help="Input side in pixels.")
@click.option("--runs", type=click.IntRange(min=1), default=3, show_default=True,
              help="Timed runs per runtime after a warm-up (the median counts).")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads [default: torch's].")
@click.option("--no-compile", is_flag=True,
              help="Leave out torch.compile (its compile took 17-72 s for RRDB x4plus on a 2-core CPU).")
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None, help="Also write the figures here.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def bench_runtime(upscalers, size, runs, threads, no_compile, json_path, quiet) -> None:
    """Seconds per upscaler forward on the CPU with each runtime (torch, channels-last, ONNX Runtime,
    ncnn, torch.compile) on the same input, each one's max difference from torch fp32, and the
    runtime `auto` picks."""
    import torch

    from ..bench.runtime import format_table, run_runtime

    if threads:
        torch.set_num_threads(threads)
    result = run_runtime(upscalers, size=size, runs=runs, compile_too=not no_compile, progress=not quiet)
    click.echo(format_table(result))
    write_json(json_path, result)


def _size(text: str, option: str) -> tuple[int, int]:
    """``WIDTHxHEIGHT`` -> (width, height), or a usage error naming ``option``."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() and int(p) >= 16 for p in parts):
        raise click.BadParameter(f"{text!r}: give WIDTHxHEIGHT (16 pixels or more each), e.g. 3840x2160",
                                 param_hint=option)
    return int(parts[0]), int(parts[1])


@bench.command("memory")
@click.option("--seconds", "durations", type=click.FloatRange(min=0.04), multiple=True,
              help="Clip durations in seconds (repeatable; default 10 and 60).")
@click.option("--width", type=click.IntRange(min=16), default=128, show_default=True, help="Synthetic clip width.")
@click.option("--height", type=click.IntRange(min=16), default=96, show_default=True, help="Synthetic clip height.")
@click.option("--scale", type=click.Choice(["1", "2", "4"]), default="4", show_default=True, help="Output size factor.")
@click.option("--upscaler", default=None, help="--upscaler for the jobs [default: the jobs' default, auto].")
@click.option("--photo", "photo_size", default=None, metavar="WxH",
              help="Also restore one synthetic photo of this size with the photo job, e.g. 3840x2160.")
@models_dir_option
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None, help="Also write the figures here.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def bench_memory(durations, width, height, scale, upscaler, photo_size, models_dirs, json_path, quiet) -> None:
    """Peak memory of the video job on clips of the same size and different lengths (each job in its
    own process): it should not grow with the length; with --photo, of one large photo."""
    from ..bench.memory import MemoryConfig, format_table, run_memory

    photo = _size(photo_size, "--photo") if photo_size else None
    cfg = MemoryConfig(durations=durations or (10.0, 60.0), width=width, height=height, scale=int(scale),
                       models=models_dirs, progress=not quiet, upscaler=upscaler, photo=photo)
    result = run_memory(cfg)
    click.echo(format_table(result))
    write_json(json_path, result)


@bench.command("scale")
@click.option("--photos", type=click.Path(path_type=Path),
              **shared_default("real", "photos", "redegnet_lqs"),
              help="A folder of photos (recursive); the same ones for every executor.")
@click.option("--max-photos", type=click.IntRange(min=1), default=8, show_default=True, help="Use only the first N.")
@click.option("--workers", "worker_counts", type=click.IntRange(min=1), multiple=True,
              help="Ray worker counts to measure (repeatable) [default: 1 and 2].")
@click.option("--ray-address", default=None, metavar="HOST:PORT",
              help="A Ray cluster [default: $RAY_ADDRESS, else a local Ray instance for each configuration].")
@click.option("--cpus-per-worker", type=click.FloatRange(min=0.01), default=1.0, show_default=True)
@click.option("--gpus-per-worker", type=click.FloatRange(min=0), default=0.0, show_default=True)
@click.option("--scale", type=click.Choice(["1", "2", "4"]), default="4", show_default=True, help="Output size factor.")
@click.option("--upscaler", default="condsr", show_default=True, metavar="auto|condsr|NAME|PATH",
              help="As for `run`; condsr (no upscaler file) keeps a CPU run short.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
@click.option("--store", "store_counts", type=click.IntRange(min=10), multiple=True, metavar="N",
              help="Instead, the job store at N generated tiny photos (repeatable: --store 10000 --store 100000): "
                   "time to open and reopen the job, claim-and-mark overhead per item, `status` and `jobs` time, "
                   "database size.")
@models_dir_option
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None, help="Also write the figures here.")
def bench_scale(photos, max_photos, worker_counts, ray_address, cpus_per_worker, gpus_per_worker, scale, upscaler,
                device, store_counts, models_dirs, json_path) -> None:
    """Photos per second of the photo job on the local executor and on Ray with 1, 2... workers, on the
    same photos (outputs checked to be the local ones); with --store, what the job store costs at N photos."""
    from ..bench.scale import ScaleConfig, format_table, run_scale
    from ..pipeline.photo import PhotoJobOptions

    if store_counts:
        from ..bench.store import format_store, run_store

        result = run_store(sorted(store_counts))
        click.echo(format_store(result))
        write_json(json_path, result)
        return
    if not photos.exists():
        raise click.BadParameter(f"{photos} does not exist", param_hint="--photos")

    options = PhotoJobOptions(scale=int(scale), device=device, models_dirs=tuple(models_dirs),
                              **upscaler_settings(upscaler, None, models_dirs))
    cfg = ScaleConfig(photos=photos, max_photos=max_photos, workers=worker_counts or (1, 2), ray_address=ray_address,
                      cpus_per_worker=cpus_per_worker, gpus_per_worker=gpus_per_worker, options=options)
    result = run_scale(cfg)
    click.echo(format_table(result))
    write_json(json_path, result)


@bench.command("soak")
@click.option("--photos", type=click.IntRange(min=2), default=300, show_default=True, help="Small photos to restore.")
@click.option("--kills", type=click.IntRange(min=0), default=10, show_default=True,
              help="Times the job is killed with SIGKILL at random moments before it is run to the end.")
@click.option("--seed", type=int, default=0, show_default=True)
@models_dir_option
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None, help="Also write the figures here.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def bench_soak(photos, kills, seed, models_dirs, json_path, quiet) -> None:
    """A photo job killed again and again (SIGKILL, random moments), then finished: every photo done once,
    outputs byte-identical to an uninterrupted run's, no temporary file left; exit 1 when a check fails."""
    from ..bench.soak import SoakConfig, format_lines, run_soak

    result = run_soak(SoakConfig(photos=photos, kills=kills, seed=seed, models=models_dirs, progress=not quiet))
    click.echo(format_lines(result))
    write_json(json_path, result.as_dict())
    if not result.passed:
        raise click.exceptions.Exit(1)


@bench.command("niqe")
@click.argument("folders", nargs=-1, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--model", "model_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="NIQE pristine model JSON [default: models/niqe_pristine.json].")
@click.option("--bicubic-x4", is_flag=True,
              help="Also score each image after area-down x4 and bicubic-up x4 (an HQ photo should score lower).")
@click.option("--upscale", multiple=True, metavar="bicubic|NAME|PATH",
              help="Also score each image enlarged x4 by bicubic or by an upscaler alone (repeatable): the "
                   "baselines for a restored folder of the same photos.")
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None, help="Also write the figures here.")
@click.option("--fit", "fit_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              metavar="DIR", help="Instead of scoring: fit the pristine model on the pristine images under DIR (recursive).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where --fit writes the model.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def bench_niqe(folders, model_path, bicubic_x4, upscale, json_path, fit_dir, out, quiet) -> None:
    """Mean NIQE (Mittal et al. 2013; no reference, lower is more natural) of the images under each
    FOLDER (recursive), one line per folder; images under 96x96 are skipped and counted."""
    from ..bench.niqe import fit_model, format_lines, run_niqe
    from ..errors import UsageError

    if fit_dir is not None:
        if out is None or folders:
            raise UsageError("--fit DIR takes --out FILE and no folders to score")
        model = fit_model(fit_dir, out, f"archive-restore bench niqe --fit {fit_dir} --out {out}", progress=not quiet)
        p = model.provenance
        click.echo(f"NIQE pristine model: {p['patches']} patches from {p['images']} images of {fit_dir} -> {out}")
        return
    if not folders:
        raise UsageError("give one or more folders to score (or --fit DIR --out FILE to refit the model)")
    result = run_niqe(folders, model_path, bicubic=bicubic_x4, upscale=upscale, progress=not quiet)
    click.echo(format_lines(result))
    write_json(json_path, result)
