"""The command line. This is the one place where errors become messages and exit codes:
0 all done, 1 something failed, 2 usage errors."""
from __future__ import annotations

import functools
import json
from pathlib import Path

import click

from .errors import ArchiveRestoreError, DatabaseError, DiskFullError
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


# ---------------------------------------------------------------------------------------------- jobs
def _jobs_dir_option(f):
    return click.option("--jobs-dir", type=click.Path(path_type=Path), default=None,
                        help="Job database and working folders (default ./jobs, or $ARCHIVE_RESTORE_JOBS_DIR).")(f)


def _models_dir_option(f):
    return click.option("--models-dir", "models_dirs", multiple=True, type=click.Path(path_type=Path),
                        help="Folder searched first for model files (repeatable; then $ARCHIVE_RESTORE_MODELS, "
                             "the repository's models/, ~/.cache/archive-restore).")(f)


def _upscaler_options(f):
    f = click.option("--fidelity", type=click.FloatRange(0.0, 1.0), default=None,
                     help="Blend of the upscaler's picture towards the faithful CondSR result: 0 the upscaler's "
                          "alone, 1 CondSR's [default: 0.1, the best trade-off measured; see models/MODELS.md].")(f)
    return click.option("--upscaler", default=None, metavar="auto|condsr|NAME|PATH",
                        help="The upscaler after the code-steered cleanup: auto (the best one present, said once), "
                             "condsr (CondSR alone, no cleanup), a name from `archive-restore models list`, or a "
                             "file spandrel loads (Real-ESRGAN, SRVGG, SwinIR...) or an ncnn .param "
                             "[default: auto].")(f)


def _upscaler_settings(choice: str, fidelity: float | None, models_dirs) -> dict:
    """The job options for ``--upscaler`` / ``--fidelity``: the upscaler resolved to a file (and its
    sha256, part of the job's identity); which one is used is said once."""
    from .pipeline.stack import DEFAULT_FIDELITY
    from .upscalers import CONDSR, resolve_upscaler

    ref = resolve_upscaler(choice, models_dirs)
    if ref.path is None:
        click.echo("note: upscaler: CondSR alone (no cleanup stage)", err=True)
        return {"upscaler": CONDSR}
    click.echo(f"note: upscaler: {ref.name} ({ref.source})", err=True)
    return {"upscaler": ref.path, "upscaler_sha256": ref.sha256,
            "fidelity": DEFAULT_FIDELITY if fidelity is None else fidelity}


def _executor_options(f):
    """``--executor`` and its Ray options, handed to the command as one ``executor`` (ExecutorSettings)."""
    @functools.wraps(f)
    def command(*args, executor, ray_address, workers, gpus_per_worker, cpus_per_worker, **kwargs):
        from .executors import ExecutorSettings

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


def _run_recorded(store, pipeline_job, **run_options):
    """Run a photo or video job and record in its folder the device and network files it ran with (for
    ``report``)."""
    from .report import run_recorded

    return run_recorded(store, pipeline_job, **run_options)


def _preview_done(preview, what: str) -> None:
    """What a preview did and where its report is; exit 1 when a sample failed."""
    s = preview.summary
    click.echo(f"preview: {preview.samples} {what} (its job's items: {s.done} done, {s.failed} failed, {s.skipped} "
               f"skipped) in {s.seconds:.1f} s; report: {preview.index.as_uri()}")
    if s.failed:
        raise click.exceptions.Exit(1)


def _finish(store, job, summary) -> None:
    """The end-of-job summary; exit 1 when anything failed."""
    click.echo(
        f"job {job.id}: {summary.done} done, {summary.failed} failed, {summary.skipped} skipped, "
        f"{summary.pending} pending in {summary.seconds:.1f} s -> {job.output}"
    )
    click.echo(f"job database: {store.path} (details: archive-restore status {job.id})")
    if summary.failed:
        for item in store.items(job.id, status="failed")[:10]:
            click.echo(f"  failed: {item.key}: {item.error}", err=True)
        raise click.exceptions.Exit(1)


@cli.command()
@click.argument("input_dir", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="Output folder (default: <DIR>_restored beside DIR), mirroring DIR's structure.")
@click.option("--scale", type=click.Choice(["1", "2", "4"]), default="4", show_default=True, help="Output size factor.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
@click.option("--face-detector", type=click.Choice(["auto", "retinaface", "yunet", "haar"]), default="auto",
              show_default=True, help="auto takes the best one whose model file is present (Haar needs none).")
@click.option("--tile", type=click.IntRange(min=32), default=None,
              help="LQ tile size [default: whole pictures when they fit the device's free memory, else tiles as "
                   "large as fit].")
@click.option("--face-restorer", type=click.Choice(["auto", "gfpgan", "none"]), default="auto", show_default=True,
              help="GFPGAN restores faces and gives paired codes; auto uses it when GFPGANv1.4.pth (or v1.3) is "
                   "present and says so when it is not (`archive-restore models fetch gfpgan-v1.4`).")
@click.option("--face-fidelity", type=click.FloatRange(0.0, 1.0), default=0.0, show_default=True,
              help="Pasted faces: 0 the restored face, 1 the face as the rest of the photo was restored.")
@_upscaler_options
@click.option("--restart", is_flag=True, help="Forget this job's progress and start again.")
@click.option("--retry-failed", is_flag=True, help="Try the items that failed last time again.")
@click.option("--preview", type=click.IntRange(min=1), default=None, metavar="N",
              help="Restore only N photos spread over the folders, in a preview folder under the jobs folder, write "
                   "their report and stop; the real job and its outputs are not touched.")
@_executor_options
@_models_dir_option
@_jobs_dir_option
def run(input_dir, output, scale, device, face_detector, tile, face_restorer, face_fidelity, upscaler, fidelity,
        restart, retry_failed, preview, executor, models_dirs, jobs_dir) -> None:
    """Restore a photo collection (recursively). Running it again resumes where it stopped."""
    from .executors import open_executor
    from .pipeline.photo import PhotoJobOptions, open_photo_job
    from .store import JobStore

    options = PhotoJobOptions(scale=int(scale), face_detector=face_detector, tile=tile, device=device,
                              models_dirs=tuple(models_dirs), face_restorer=face_restorer,
                              face_fidelity=face_fidelity,
                              **_upscaler_settings(upscaler or "auto", fidelity, models_dirs))
    if preview:
        from .report.preview import preview_photos
        from .store import resolve_jobs_dir

        return _preview_done(preview_photos(resolve_jobs_dir(jobs_dir), input_dir, output, options, preview), "photos")
    with JobStore.open(jobs_dir) as store:
        photo_job = open_photo_job(store, input_dir, output, options)
        with open_executor(executor) as chosen:
            summary = _run_recorded(store, photo_job, restart=restart, retry_failed=retry_failed,
                                    work=chosen.work_for(photo_job))
        _finish(store, photo_job.job, summary)


@cli.command()
@click.option("--repair", is_flag=True,
              help="The job database is damaged: move it aside and build a new one from every row it still "
                   "holds (finished items are kept).")
@_jobs_dir_option
def jobs(repair, jobs_dir) -> None:
    """List the jobs in the job database, newest first."""
    from .store import JobStore

    if repair:
        from .repair import repair_database

        click.echo("\n".join(repair_database(jobs_dir).lines()))
    with JobStore.open(jobs_dir) as store:
        rows = sorted(store.jobs(), key=lambda j: j.created, reverse=True)
        if not rows:
            click.echo(f"no jobs in {store.path}")
            return
        for job in rows:
            counts = store.summary(job.id)
            done = ", ".join(f"{v} {k}" for k, v in counts.items() if v)
            click.echo(f"{job.id}  {job.kind:<6} {job.status:<8} {done or 'no items'}  {job.input} -> {job.output}")


@cli.command()
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="The job and every item as JSON, for scripts.")
@_jobs_dir_option
def status(job_id, as_json, jobs_dir) -> None:
    """A job's state and its items (status, error, code source, faces, output)."""
    from dataclasses import asdict

    from .store import JobStore

    with JobStore.open(jobs_dir) as store:
        job = store.job(job_id)
        items = store.items(job.id)
        if as_json:
            data = {"job": asdict(job), "summary": store.summary(job.id), "locked_by": store.locked_by(job.id),
                    "items": [asdict(i) for i in items]}
            click.echo(json.dumps(data, indent=2, default=str))
            return
        click.echo(f"job {job.id} ({job.kind}, {job.status}): {job.input} -> {job.output}")
        click.echo(f"options: {json.dumps(job.options, sort_keys=True)}")
        holder = store.locked_by(job.id)
        if holder:
            click.echo(f"being worked on by process {holder}")
        if job.kind == "video":
            from .pipeline.video import shot_lines

            click.echo("\n".join(shot_lines(items)))
            return
        for item in items:
            faces = "" if item.faces is None else f" faces={item.faces}"
            source = f" code={item.code_source}" if item.code_source else ""
            error = f"  {item.error}" if item.error else ""
            gone = "  (the photo is gone from the input; its output is kept)" if item.extra.get("gone") else ""
            click.echo(f"  {item.status:<8} {item.key}{faces}{source}{error}{gone}")


@cli.command()
@click.argument("job_id")
@click.option("-o", "--output", "folder", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for the report [default: the job's folder report/].")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@_jobs_dir_option
def report(job_id, folder, quiet, jobs_dir) -> None:
    """A job as a web page, FOLDER/index.html (works offline, from file://): before/after sliders, detail
    crops, face boxes and why anything failed; per video its shots, face tracks and chunk timings."""
    from .report import write_report
    from .store import JobStore

    with JobStore.open(jobs_dir) as store:
        index = write_report(store, store.job(job_id), folder, progress=not quiet)
    click.echo(f"report: {index.as_uri()}")


@cli.command()
@click.argument("job_id")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
@click.option("--retry-failed", is_flag=True, help="Try the items that failed last time again.")
@_upscaler_options
@_executor_options
@_models_dir_option
@_jobs_dir_option
def resume(job_id, device, retry_failed, upscaler, fidelity, executor, models_dirs, jobs_dir) -> None:
    """Carry on with a job by its id (or a unique prefix), with the options it was started with.
    --upscaler or --fidelity other than the job's make a new job for the same input and output."""
    from .errors import JobError
    from .executors import open_executor
    from .pipeline.photo import KIND, PhotoJob, PhotoJobOptions, open_photo_job
    from .store import JobStore

    with JobStore.open(jobs_dir) as store:
        job = store.job(job_id)
        if job.kind == "video":
            return _resume_video(store, job, device, retry_failed, upscaler, fidelity, models_dirs, executor)
        if job.kind != KIND:
            raise JobError(f"job {job.id} is a {job.kind} job; this version resumes {KIND} jobs")
        options = PhotoJobOptions.from_identity(job.options, device=device, models_dirs=tuple(models_dirs))
        job, options = _with_upscaler(store, job, options, upscaler, fidelity, models_dirs, open_photo_job)
        photo_job = PhotoJob(store, job, options)
        with open_executor(executor) as chosen:
            summary = _run_recorded(store, photo_job, retry_failed=retry_failed, work=chosen.work_for(photo_job))
        _finish(store, job, summary)


def _with_upscaler(store, job, options, upscaler: str | None, fidelity: float | None, models_dirs, open_job):
    """The job and options ``resume`` runs: the job itself, or, when ``--upscaler``/``--fidelity`` ask for
    other ones than its own, the job for the same input and output with those (said once)."""
    if upscaler is None and fidelity is None:
        return job, options
    options = _changed_upscaler(options, upscaler, fidelity, models_dirs)
    if options.identity() == job.options:
        return job, options
    other = open_job(store, Path(job.input), Path(job.output), options).job
    click.echo(f"note: another upscaler or fidelity than job {job.id}'s: job {other.id}", err=True)
    return other, options


def _changed_upscaler(options, upscaler: str | None, fidelity: float | None, models_dirs):
    """``options`` with the upscaler and fidelity asked for on ``resume`` (the job's own where not given)."""
    from dataclasses import replace

    from .upscalers import CONDSR

    if upscaler is None:
        if options.upscaler == CONDSR:
            return options
        return replace(options, fidelity=options.fidelity if fidelity is None else fidelity)
    return replace(options, **{"upscaler_sha256": None, **_upscaler_settings(upscaler, fidelity, models_dirs)})


# --------------------------------------------------------------------------------------------- video
@cli.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="Output file (one input) or folder (several); default <name>_restored.<ext> beside each input.")
@click.option("--scale", type=click.Choice(["1", "2", "4"]), default="4", show_default=True, help="Output size factor.")
@click.option("--codec", default="libx264", show_default=True, help="Video encoder (libx264, libx265, ffv1, ...).")
@click.option("--crf", type=click.IntRange(0, 51), default=18, show_default=True, help="Quality for libx264/libx265.")
@click.option("--preset", default="medium", show_default=True, help="Speed preset for libx264/libx265.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
@click.option("--batch", type=click.IntRange(min=1), default=4, show_default=True, help="Frames per forward pass.")
@click.option("--backend", type=click.Choice(["pyav", "decord"]), default="pyav", show_default=True,
              help="Video decoder.")
@click.option("--face-detector", type=click.Choice(["auto", "retinaface", "yunet", "haar"]), default="auto",
              show_default=True, help="auto takes the best one whose model file is present (Haar needs none).")
@click.option("--detect-every", type=click.IntRange(min=1), default=5, show_default=True,
              help="Detect faces every N frames of a shot (tracked in between).")
@click.option("--chunk-frames", type=click.IntRange(min=1), default=120, show_default=True,
              help="Longest render chunk; a crash loses at most one chunk.")
@click.option("--tile", type=click.IntRange(min=32), default=None,
              help="LQ tile size [default: whole frames, batched, when they fit the device's free memory, else "
                   "tiles as large as fit].")
@click.option("--face-restorer", type=click.Choice(["auto", "gfpgan", "none"]), default="auto", show_default=True,
              help="GFPGAN restores faces (steadied along their tracks) and gives paired codes; auto uses it when "
                   "GFPGANv1.4.pth (or v1.3) is present and says once per job when it is not.")
@click.option("--face-fidelity", type=click.FloatRange(0.0, 1.0), default=0.0, show_default=True,
              help="Pasted faces: 0 the restored face, 1 the face as the rest of the frame was restored.")
@_upscaler_options
@click.option("--restart", is_flag=True, help="Forget this job's progress and start again.")
@click.option("--retry-failed", is_flag=True, help="Try the items that failed last time again.")
@click.option("--preview", type=click.IntRange(min=1), default=None, metavar="N",
              help="Analyse each video, restore only N frames spread over its shots, in a preview folder under the "
                   "jobs folder, write their report and stop; the real job and its output are not touched.")
@_executor_options
@_models_dir_option
@_jobs_dir_option
def video(inputs, output, scale, codec, crf, preset, device, batch, backend, face_detector, detect_every,
          chunk_frames, tile, face_restorer, face_fidelity, upscaler, fidelity, restart, retry_failed, preview,
          executor, models_dirs, jobs_dir) -> None:
    """Restore videos (files, or folders of them): one job each, shot by shot, keeping timing and audio.
    Running it again resumes where it stopped."""
    from .errors import UsageError
    from .executors import open_executor
    from .media.video import check_encoder
    from .pipeline.video import VideoJobOptions, find_videos, open_video_job, output_for
    from .store import JobStore

    check_encoder(codec)
    options = VideoJobOptions(scale=int(scale), codec=codec, crf=crf, preset=preset, backend=backend,
                              face_detector=face_detector, detect_every=detect_every, chunk_frames=chunk_frames,
                              tile=tile, device=device, batch=batch, models_dirs=tuple(models_dirs),
                              face_restorer=face_restorer, face_fidelity=face_fidelity,
                              **_upscaler_settings(upscaler or "auto", fidelity, models_dirs))
    videos = find_videos(inputs)
    if not videos:
        raise UsageError(f"no video files in {', '.join(map(str, inputs))}")
    if preview:
        return _preview_videos(videos, output, options, preview, jobs_dir)
    worst = 0
    with JobStore.open(jobs_dir) as store, open_executor(executor) as chosen:
        for path in videos:
            try:
                video_job = open_video_job(store, path, output_for(path, output, len(videos) > 1), options)
                summary = _run_recorded(store, video_job, restart=restart, retry_failed=retry_failed,
                                        work=chosen.work_for(video_job))
                worst = max(worst, _video_report(store, video_job.job, summary))
            except (DiskFullError, DatabaseError):
                raise  # the next video would meet the same full disk or database: stop here
            except ArchiveRestoreError as exc:
                click.echo(f"error: {path}: {exc}", err=True)
                worst = max(worst, exc.exit_code)
    if worst:
        raise click.exceptions.Exit(worst)


def _preview_videos(videos, output, options, n: int, jobs_dir) -> None:
    """``video --preview N`` for each video; exit 1 when one failed."""
    from .pipeline.video import output_for
    from .report.preview import preview_video
    from .store import resolve_jobs_dir

    worst = 0
    for path in videos:
        try:
            _preview_done(preview_video(resolve_jobs_dir(jobs_dir), path, output_for(path, output, len(videos) > 1),
                                        options, n), f"frames of {path.name}")
        except click.exceptions.Exit as done:
            worst = max(worst, done.exit_code)
        except ArchiveRestoreError as exc:
            click.echo(f"error: {path}: {exc}", err=True)
            worst = max(worst, exc.exit_code)
    if worst:
        raise click.exceptions.Exit(worst)


def _video_report(store, job, summary) -> int:
    """One video job's outcome; returns its exit code (1 when anything failed)."""
    if summary.failed:
        first = store.items(job.id, status="failed")[0]
        click.echo(f"error: {first.key} failed: {first.error} ({summary.failed} failed item(s) in job {job.id}; "
                   f"nothing written at {job.output})", err=True)
        return 1
    click.echo(f"job {job.id}: {job.input} -> {job.output} ({summary.done} items in {summary.seconds:.1f} s)")
    from .pipeline.video import damage_note

    if note := damage_note(store.items(job.id)):
        click.echo(f"note: {note}", err=True)
    return 0


def _resume_video(store, job, device, retry_failed, upscaler, fidelity, models_dirs, executor) -> None:
    from .executors import open_executor
    from .pipeline.video import VideoJob, VideoJobOptions, open_video_job

    options = VideoJobOptions.from_identity(job.options, device=device, models_dirs=tuple(models_dirs))
    job, options = _with_upscaler(store, job, options, upscaler, fidelity, models_dirs, open_video_job)
    video_job = VideoJob(store, job, options)
    with open_executor(executor) as chosen:
        summary = _run_recorded(store, video_job, retry_failed=retry_failed, work=chosen.work_for(video_job))
    if _video_report(store, job, summary):
        raise click.exceptions.Exit(1)


# ---------------------------------------------------------------------------------------------- train
@cli.command()
@click.argument("stage", type=click.Choice(["degradation", "restorer", "uncond", "blind", "cleanup", "all"]))
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
    uncond (its unconditioned twin, same batches), blind (BlindDegEncoder distilled), cleanup (the x1
    code-conditioned cleanup before the upscaler), or all in order."""
    from .device import resolve_device
    from .train import Budget, TrainConfig, train_blind, train_cleanup, train_degradation, train_restorer

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
@click.option("--upscaler", "upscalers", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="An x4 upscaler file (spandrel or ncnn .param): adds the rows NAME (alone) and NAME+face_code, "
                   "NAME+blind_code, NAME+oracle_code (the stack), NAME = the file's stem (repeatable).")
@click.option("--fidelity", "fidelities", type=click.FloatRange(0.0, 1.0), multiple=True,
              help="The stack's blend towards CondSR [default: the jobs' default]; repeat it for a row per value.")
@click.option("--sheet", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write a PNG of a few crops per method side by side.")
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None, help="Also write the figures here.")
def bench_quality(images, faces, degradations, scale, seed, crop, max_images, models_dirs, upscalers, fidelities,
                  sheet, json_path) -> None:
    """Face code -> natural image: PSNR-Y/SSIM/NIQE of bicubic, the unconditioned twin, CondSR with the
    face code, the blind code and the oracle code, each --upscaler alone and in the stack, and face ->
    natural code retrieval."""
    from .bench import QualityConfig, format_table, run_quality
    from .pipeline.stack import DEFAULT_FIDELITY

    cfg = QualityConfig(images=images, faces=faces, degradations=degradations, scale=int(scale), seed=seed, crop=crop,
                        max_images=max_images, models=models_dirs, upscalers=upscalers,
                        fidelities=fidelities or (DEFAULT_FIDELITY,), sheet=sheet)
    result = run_quality(cfg)
    click.echo(format_table(result))
    _write_json(json_path, result)


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
@_models_dir_option
def bench_steady(image, width, frames, noise, seed, face_detector, restorer, device, models_dirs) -> None:
    """Flicker of a still face in the restored video: frame-to-frame difference of the pasted face,
    frame by frame and steadied along its track (as the video job renders)."""
    from .bench_steady import default_face, measure, read_face
    from .pipeline.engine import Engine, EngineOptions

    face = read_face(image, width) if image else default_face(width)
    engine = Engine(EngineOptions(scale=1, device=device, face_detector=face_detector, models_dirs=tuple(models_dirs),
                                  face_restorer="none" if restorer == "identity" else "auto"))
    click.echo("\n".join(measure(engine, face, frames, noise, seed, restorer).lines()))


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
@click.option("--runtime", type=click.Choice(["auto", "torch", "channels-last", "onnxruntime", "ncnn", "half"]),
              default=None,
              help="The upscalers' CPU runtime [default: the jobs' choice, auto; half (fp16 on CPUs with "
                   "AMX-FP16) is never auto's choice: faster, but not within 1e-3 of fp32].")
@_models_dir_option
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None, help="Also write the figures here.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def bench_speed(input_path, sizes, upscalers, device, batch, frames, width, height, tile, runtime, models_dirs,
                json_path, quiet) -> None:
    """Frames per second: decode, our forward, the eager forward, end to end (the video job's render)
    and a Real-ESRGAN-style per-frame loop with the same networks, for CondSR and for the stack with
    each --upscaler; peak memory."""
    from .bench_speed import SpeedConfig, format_table, run_speed

    cfg = SpeedConfig(input=input_path, sizes=sizes or ("compact",), upscalers=upscalers, device=device, batch=batch,
                      frames=frames, width=width, height=height, tile=tile, models=models_dirs, progress=not quiet,
                      runtime=runtime)
    result = run_speed(cfg)
    click.echo(format_table(result))
    _write_json(json_path, result)


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

    from .bench_runtime import format_table, run_runtime

    if threads:
        torch.set_num_threads(threads)
    result = run_runtime(upscalers, size=size, runs=runs, compile_too=not no_compile, progress=not quiet)
    click.echo(format_table(result))
    _write_json(json_path, result)


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
@_models_dir_option
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None, help="Also write the figures here.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def bench_memory(durations, width, height, scale, upscaler, photo_size, models_dirs, json_path, quiet) -> None:
    """Peak memory of the video job on clips of the same size and different lengths (each job in its
    own process): it should not grow with the length; with --photo, of one large photo."""
    from .bench_memory import MemoryConfig, format_table, run_memory

    photo = _size(photo_size, "--photo") if photo_size else None
    cfg = MemoryConfig(durations=durations or (10.0, 60.0), width=width, height=height, scale=int(scale),
                       models=models_dirs, progress=not quiet, upscaler=upscaler, photo=photo)
    result = run_memory(cfg)
    click.echo(format_table(result))
    _write_json(json_path, result)


@bench.command("scale")
@click.option("--photos", type=click.Path(exists=True, path_type=Path),
              default=SHARED_DATA / "real" / "photos" / "redegnet_lqs", show_default=True,
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
@_models_dir_option
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None, help="Also write the figures here.")
def bench_scale(photos, max_photos, worker_counts, ray_address, cpus_per_worker, gpus_per_worker, scale, upscaler,
                device, models_dirs, json_path) -> None:
    """Photos per second of the photo job on the local executor and on Ray with 1, 2... workers, on the
    same photos (outputs checked to be the local ones)."""
    from .bench_scale import ScaleConfig, format_table, run_scale
    from .pipeline.photo import PhotoJobOptions

    options = PhotoJobOptions(scale=int(scale), device=device, models_dirs=tuple(models_dirs),
                              **_upscaler_settings(upscaler, None, models_dirs))
    cfg = ScaleConfig(photos=photos, max_photos=max_photos, workers=worker_counts or (1, 2), ray_address=ray_address,
                      cpus_per_worker=cpus_per_worker, gpus_per_worker=gpus_per_worker, options=options)
    result = run_scale(cfg)
    click.echo(format_table(result))
    _write_json(json_path, result)


@bench.command("soak")
@click.option("--photos", type=click.IntRange(min=2), default=300, show_default=True, help="Small photos to restore.")
@click.option("--kills", type=click.IntRange(min=0), default=10, show_default=True,
              help="Times the job is killed with SIGKILL at random moments before it is run to the end.")
@click.option("--seed", type=int, default=0, show_default=True)
@_models_dir_option
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None, help="Also write the figures here.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def bench_soak(photos, kills, seed, models_dirs, json_path, quiet) -> None:
    """A photo job killed again and again (SIGKILL, random moments), then finished: every photo done once,
    outputs byte-identical to an uninterrupted run's, no temporary file left; exit 1 when a check fails."""
    from .bench_soak import SoakConfig, format_lines, run_soak

    result = run_soak(SoakConfig(photos=photos, kills=kills, seed=seed, models=models_dirs, progress=not quiet))
    click.echo(format_lines(result))
    _write_json(json_path, result.as_dict())
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
    from .bench_niqe import fit_model, format_lines, run_niqe
    from .errors import UsageError

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
    _write_json(json_path, result)


# ---------------------------------------------------------------------------------------------- models
@cli.group()
def models() -> None:
    """Third-party model files (face restorer, detectors, parsing): list, fetch, verify, locate."""


@models.command("list")
@_models_dir_option
def models_list(models_dirs) -> None:
    """Every known model: where it is found (the first copy is used) or how to fetch it."""
    from .models import MODEL_FILES, find_model
    from .weights import MANIFEST, locate

    for item in MANIFEST.values():
        found = locate(item, models_dirs)
        where = f"present: {found[0]}" if found else f"missing (archive-restore models fetch {item.name})"
        click.echo(f"{item.name:<26} {item.filename:<38} {where}")
        click.echo(f"{'':<26} {item.used_by}; {item.licence}; {item.url}")
    from .upscalers import available_upscalers, resolve_upscaler

    click.echo("upscalers (--upscaler):")
    for ref in available_upscalers(models_dirs):
        click.echo(f"{ref.name:<26} {ref.path}")
        click.echo(f"{'':<26} x{ref.scale}; {ref.source}")
    click.echo(f"{'condsr':<26} built in: our CondSR alone (no upscaler file)")
    auto = resolve_upscaler("auto", models_dirs)
    click.echo(f"{'auto picks':<26} {auto.name}" + (f" ({auto.path})" if auto.path else ""))
    click.echo("our own networks (trained with `archive-restore train`):")
    for key in MODEL_FILES:
        try:
            click.echo(f"{key:<26} present: {find_model(key, models_dirs)}")
        except ArchiveRestoreError:
            click.echo(f"{key:<26} missing")


@models.command("fetch")
@click.argument("names", nargs=-1, required=True)
@click.option("--trust-unverified", is_flag=True,
              help="Install a file that has no pinned sha256 (its computed sha256 is printed).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@_models_dir_option
def models_fetch(names, trust_unverified, quiet, models_dirs) -> None:
    """Download NAME... (or `all`) from the official URL into the first --models-dir (else the first
    $ARCHIVE_RESTORE_MODELS folder, else ~/.cache/archive-restore): resumable, sha256-checked."""
    from .errors import DownloadError
    from .weights import MANIFEST, download_dir, entry, fetch

    items = list(MANIFEST.values()) if "all" in names else [entry(n) for n in names]
    dest, failed = download_dir(models_dirs), []
    for item in items:
        try:
            result = fetch(item, dest, trust_unverified=trust_unverified, progress=not quiet)
        except DownloadError as exc:
            if len(items) == 1:
                raise
            click.echo(f"error: {item.name}: {exc}", err=True)
            failed.append(item.name)
            continue
        click.echo(f"{item.name}: {result.path} ({result.status}, sha256 {result.sha256})")
    if failed:
        raise click.exceptions.Exit(1)


@models.command("verify")
@_models_dir_option
def models_verify(models_dirs) -> None:
    """The sha256 of every model file present, against the manifest; exit 1 on a mismatch."""
    from .weights import MANIFEST, locate, verify

    mismatches = 0
    for item in MANIFEST.values():
        for path in locate(item, models_dirs):
            result = verify(item, path)
            mismatches += result.status == "mismatch"
            state = "MISMATCH" if result.status == "mismatch" else result.status
            note = f" ({result.note})" if result.note else ""
            click.echo(f"{item.name:<26} {state:<9} {path} sha256 {result.sha256}{note}")
    if mismatches:
        raise click.exceptions.Exit(1)


@models.command("path")
@click.argument("name")
@_models_dir_option
def models_path(name, models_dirs) -> None:
    """The file used for NAME (a name from `models list`); exit 1 when it is missing."""
    from .models import MODEL_FILES, find_model
    from .weights import entry, find

    click.echo(str(find_model(name, models_dirs) if name in MODEL_FILES else find(entry(name), models_dirs)))


def main() -> None:
    cli(prog_name="archive-restore")


if __name__ == "__main__":
    main()
