"""Options several commands share: the job database and models folders, the upscaler, the executor,
and the JSON file a benchmark writes."""
from __future__ import annotations

import functools
import json
from pathlib import Path

import click

from ..paths import SHARED_DATA


def shared_default(*parts: str) -> dict:
    """``default`` and ``show_default`` of an option whose default is a folder of the team's data beside the
    checkout: the help names it relative to the checkout, the same on every machine (docs/commands.md)."""
    return {"default": SHARED_DATA.joinpath(*parts), "show_default": "../shared/data/" + "/".join(parts)}


def write_json(path: Path | None, data: dict) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        click.echo(f"wrote {path}")


def jobs_dir_option(f):
    return click.option("--jobs-dir", type=click.Path(path_type=Path), default=None,
                        help="Job database and working folders (default ./jobs, or $ARCHIVE_RESTORE_JOBS_DIR).")(f)


def models_dir_option(f):
    return click.option("--models-dir", "models_dirs", multiple=True, type=click.Path(path_type=Path),
                        help="Folder searched first for model files (repeatable; then $ARCHIVE_RESTORE_MODELS, "
                             "the repository's models/, ~/.cache/archive-restore).")(f)


def upscaler_options(f):
    f = click.option("--precision", type=click.Choice(["auto", "fp32"]), default="auto", show_default=True,
                     envvar="ARCHIVE_RESTORE_PRECISION", show_envvar=True,
                     help="On the CPU: auto computes in fp16 or bf16 where this machine does so at least 1.5 x "
                          "faster and a check against fp32 passes (45 dB, never 8/255 off); fp32 never. A job "
                          "keeps what it first ran with on the same kind of machine.")(f)
    f = click.option("--fidelity", type=click.FloatRange(0.0, 1.0), default=None,
                     help="Blend of the upscaler's picture towards the faithful CondSR result: 0 the upscaler's "
                          "alone, 1 CondSR's [default: 0.1, the best trade-off measured; see models/MODELS.md].")(f)
    return click.option("--upscaler", default=None, metavar="auto|condsr|NAME|PATH",
                        help="The upscaler after the code-steered cleanup: auto (the best one present, said once), "
                             "condsr (CondSR alone, no cleanup), a name from `archive-restore models list`, or a "
                             "file spandrel loads (Real-ESRGAN, SRVGG, SwinIR...) or an ncnn .param "
                             "[default: auto].")(f)


def scale_method_option(f):
    """``--scale-method``: how ``--scale 1`` or ``2`` is reached with a x4 upscaler (``pipeline.stack.upscale_to``)."""
    return click.option("--scale-method", type=click.Choice(["full", "reduced", "cleanup"]), default=None,
                        help="With --scale 1 or 2 and a x4 upscaler: full runs the upscaler on the whole picture and "
                             "shrinks its answer (a x4 job's cost); reduced shrinks the cleaned picture first, so the "
                             "x4 lands on the output size (a quarter of the work at x2, a sixteenth at x1); cleanup "
                             "leaves the upscaler out [default: cleanup at --scale 1, full at 2, as measured: "
                             "models/MODELS.md].")(f)


def upscaler_settings(choice: str, fidelity: float | None, models_dirs, video_on_cpu: bool = False) -> dict:
    """The job options for ``--upscaler`` / ``--fidelity``: the upscaler resolved to a file (and its
    sha256, part of the job's identity; ``auto`` as for video on a CPU with ``video_on_cpu``); which one is
    used is said once."""
    from ..pipeline.stack import DEFAULT_FIDELITY
    from ..upscalers.upscaler import CONDSR, resolve_upscaler

    ref = resolve_upscaler(choice, models_dirs, video_on_cpu)
    if ref.path is None:
        click.echo("note: upscaler: CondSR alone (no cleanup stage)", err=True)
        return {"upscaler": CONDSR}
    click.echo(f"note: upscaler: {ref.name} ({ref.source})", err=True)
    return {"upscaler": ref.path, "upscaler_sha256": ref.sha256,
            "fidelity": DEFAULT_FIDELITY if fidelity is None else fidelity}


def on_cpu(device: str) -> bool:
    """Whether ``--device`` means the CPU here (``auto`` without a usable GPU)."""
    from ..compute.device import resolve_device

    return resolve_device(device, notify=lambda _message: None).type == "cpu"


def executor_options(f):
    """``--executor`` and its Ray options, handed to the command as one ``executor`` (ExecutorSettings)."""
    @functools.wraps(f)
    def command(*args, executor, ray_address, workers, gpus_per_worker, cpus_per_worker, **kwargs):
        from ..executors import ExecutorSettings

        settings = ExecutorSettings(executor, ray_address, workers, gpus_per_worker, cpus_per_worker)
        return f(*args, executor=settings, **kwargs)

    for decorate in (
        click.option("--cpus-per-worker", type=click.FloatRange(min=0.01), default=1.0, show_default=True,
                     help="CPUs each Ray worker reserves (also its torch threads)."),
        click.option("--gpus-per-worker", type=click.FloatRange(min=0), default=0.0, show_default=True,
                     help="GPUs each Ray worker reserves (1: one worker per GPU)."),
        click.option("--workers", type=click.IntRange(min=1), default=None,
                     help="Ray workers, each holding the networks once [default: as many as the cluster's CPUs, "
                          "or GPUs with --gpus-per-worker, hold]."),
        click.option("--ray-address", default=None, metavar="HOST:PORT",
                     help="The Ray cluster's head node [default: $RAY_ADDRESS, else a local Ray instance started "
                          "for the job]."),
        click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
                     help="Where the items run: this process, or the workers of a Ray cluster "
                          "(pip install 'archive-restore[ray]')."),
    ):
        command = decorate(command)
    return command


# the options of the frames' own clean-up: photos' damage, video fields, steadiness and film dirt
photo_defects_option = click.option(
    "--defects", type=click.Choice(["off", "on"]), default="off", show_default=True,
    help="on: scratches, cracks, dust, creases and tears found by our detector and filled (inpainted) before "
         "anything else reads the photo; nothing else is changed. Off by default until its figures hold "
         "(models/MODELS.md).")
deinterlace_option = click.option(
    "--deinterlace", type=click.Choice(["auto", "field", "frame", "ivtc", "off"]), default="auto", show_default=True,
    help="Interlaced and telecined input: auto reads the stream's field order and FFmpeg's idet over the first 300 "
         "frames; field: one frame per field (bwdif; 25i -> 50p, keeps motion); frame: one per frame; ivtc: film "
         "frames back from 3:2 pulldown (29.97 -> 23.976); off: frames as they are.")
temporal_option = click.option(
    "--temporal", type=click.Choice(["steady", "off"]), default="steady", show_default=True,
    help="steady: each restored frame is pulled towards the previous one where the input did not change "
         "(motion-compensated; against the shimmer of invented texture); off: every frame on its own.")
video_defects_option = click.option(
    "--defects", type=click.Choice(["off", "on"]), default="off", show_default=True,
    help="on: film dirt, dust and hair on single frames found against the frames beside them (motion compensated) "
         "and filled from them, and thin vertical line scratches found on each frame and filled from beside them; "
         "nothing else is changed. Off by default until its false positives on fast motion "
         "are few enough (models/MODELS.md).")


def scale_method_setting(choice: str | None, scale: str) -> dict:
    """The job option for ``--scale-method`` (the measured default for the scale when not given)."""
    from ..pipeline.stack import default_scale_method

    return {"scale_method": choice or default_scale_method(int(scale))}


adapt_option = click.option(
    "--adapt", type=click.Choice(["off", "on"]), default="off", show_default=True,
    help="on: a photo (a video shot) restored with its own faces' code gets a cleanup fine-tuned for it: 30 steps on "
         "its faces (each LQ face and GFPGAN's, at their size in the picture), kept in the job's folder and reused "
         "(about two seconds a code on a CPU); needs GFPGAN (our face restorer's faces are too soft to learn from). "
         "Other photos and shots keep the shipped "
         "cleanup. Off by default until its figures hold on real photos (models/MODELS.md).")
faces_without_restorer_option = click.option(
    "--faces-without-restorer", type=click.Choice(["faithful", "ours", "as-is"]), default="faithful",
    show_default=True,
    help="Faces, when GFPGAN is not used: faithful pulls each towards CondSR's picture of it (soft, not the "
         "upscaler's invented texture, which distorts small faces); ours restores them with our small face "
         "restorer (face_net.safetensors, at 128 px: better on faces of a few dozen pixels, blurrier on larger "
         "ones; faces looked for on the photo enlarged); as-is leaves them as the stack made them.")
