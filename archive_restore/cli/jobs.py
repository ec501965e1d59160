"""The job commands: ``run`` (photos) and ``video`` start or resume a job, ``resume`` carries on with one by
its id (``jobs``, ``status`` and ``report`` show them: ``cli.show``)."""
from __future__ import annotations

from pathlib import Path

import click

from ..errors import ArchiveRestoreError, DatabaseError, DiskFullError
from .options import (
    adapt_option,
    deinterlace_option,
    executor_options,
    faces_without_restorer_option,
    jobs_dir_option,
    models_dir_option,
    on_cpu,
    photo_defects_option,
    scale_method_option,
    scale_method_setting,
    temporal_option,
    upscaler_options,
    upscaler_settings,
    video_defects_option,
)
from .supervise import tell_job, watched


def _run_recorded(store, pipeline_job, **run_options):
    """Run a photo or video job and record in its folder the device and network files it ran with (for
    ``report``)."""
    from ..report import run_recorded

    kept = store.kept_folders.get(pipeline_job.job.id)
    if kept is not None:
        click.echo(f"note: the job database {store.path} did not know this job, but its folder held earlier work "
                   f"(was the database deleted?): kept whole as {kept}; the job starts afresh beside it", err=True)
    return run_recorded(store, pipeline_job, **run_options)


def _preview_done(preview, what: str) -> None:
    """What a preview did and where its report is; exit 1 when a sample failed."""
    s = preview.summary
    click.echo(f"preview: {preview.samples} {what} (its job's items: {s.done} done, {s.failed} failed, {s.skipped} "
               f"skipped) in {s.seconds:.1f} s; report: {preview.index.as_uri()}")
    if preview.estimate:
        click.echo(preview.estimate)
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


@click.command()
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
@upscaler_options
@scale_method_option
@photo_defects_option
@adapt_option
@faces_without_restorer_option
@click.option("--restart", is_flag=True, help="Forget this job's progress and start again.")
@click.option("--retry-failed", is_flag=True, help="Try the items that failed last time again.")
@click.option("--preview", type=click.IntRange(min=1), default=None, metavar="N",
              help="Restore only N photos spread over the folders, in a preview folder under the jobs folder, write "
                   "their report and stop; the real job and its outputs are not touched.")
@executor_options
@models_dir_option
@jobs_dir_option
@watched
def run(input_dir, output, scale, device, face_detector, tile, face_restorer, face_fidelity, upscaler, fidelity,
        precision, scale_method, defects, adapt, faces_without_restorer, restart, retry_failed, preview, executor,
        models_dirs, jobs_dir) -> None:
    """Restore a photo collection (recursively). Running it again resumes where it stopped."""
    from ..executors import open_executor
    from ..jobs.store import JobStore
    from ..pipeline.photo import PhotoJobOptions, open_photo_job
    from ..weights.folders import find_model

    if defects == "on":  # the detector's file is there, before any work
        find_model("defects", list(models_dirs))
    options = PhotoJobOptions(scale=int(scale), face_detector=face_detector, tile=tile, device=device,
                              models_dirs=tuple(models_dirs), face_restorer=face_restorer,
                              face_fidelity=face_fidelity, precision=precision, defects=defects, adapt=adapt,
                              faces_without_restorer=faces_without_restorer,
                              **scale_method_setting(scale_method, scale),
                              **upscaler_settings(upscaler or "auto", fidelity, models_dirs))
    if preview:
        from ..jobs.store import resolve_jobs_dir
        from ..report.preview import preview_photos

        return _preview_done(preview_photos(resolve_jobs_dir(jobs_dir), input_dir, output, options, preview), "photos")
    with JobStore.open(jobs_dir) as store:
        photo_job = open_photo_job(store, input_dir, output, options)
        tell_job(photo_job.job.id, store.jobs_dir)
        with open_executor(executor) as chosen:
            summary = _run_recorded(store, photo_job, restart=restart, retry_failed=retry_failed,
                                    work=chosen.work_for(photo_job))
        _finish(store, photo_job.job, summary)


@click.command()
@click.argument("job_id")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
@click.option("--retry-failed", is_flag=True, help="Try the items that failed last time again.")
@upscaler_options
@executor_options
@models_dir_option
@jobs_dir_option
@watched
def resume(job_id, device, retry_failed, upscaler, fidelity, precision, executor, models_dirs, jobs_dir) -> None:
    """Carry on with a job by its id (or a unique prefix), with the options it was started with.
    --upscaler or --fidelity other than the job's make a new job for the same input and output."""
    from ..errors import JobError
    from ..executors import open_executor
    from ..jobs.store import JobStore
    from ..pipeline.photo import KIND, PhotoJob, PhotoJobOptions, open_photo_job

    with JobStore.open(jobs_dir) as store:
        job = store.job(job_id)
        if job.kind == "video":
            return _resume_video(store, job, device, retry_failed, upscaler, fidelity, precision, models_dirs, executor)
        if job.kind != KIND:
            raise JobError(f"job {job.id} is a {job.kind} job; this version resumes {KIND} jobs")
        options = PhotoJobOptions.from_identity(job.options, device=device, models_dirs=tuple(models_dirs),
                                                precision=precision)
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

    from ..upscalers.upscaler import CONDSR

    if upscaler is None:
        if options.upscaler == CONDSR:
            return options
        return replace(options, fidelity=options.fidelity if fidelity is None else fidelity)
    video_on_cpu = hasattr(options, "codec") and on_cpu(options.device)
    return replace(options, **{"upscaler_sha256": None,
                               **upscaler_settings(upscaler, fidelity, models_dirs, video_on_cpu)})


# --------------------------------------------------------------------------------------------- video
@click.command()
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
@deinterlace_option
@temporal_option
@video_defects_option
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
@upscaler_options
@scale_method_option
@adapt_option
@faces_without_restorer_option
@click.option("--restart", is_flag=True, help="Forget this job's progress and start again.")
@click.option("--retry-failed", is_flag=True, help="Try the items that failed last time again.")
@click.option("--preview", type=click.IntRange(min=1), default=None, metavar="N",
              help="Analyse each video, restore only N frames spread over its shots, in a preview folder under the "
                   "jobs folder, write their report and stop; the real job and its output are not touched.")
@executor_options
@models_dir_option
@jobs_dir_option
@watched
def video(inputs, output, scale, codec, crf, preset, device, batch, backend, face_detector, detect_every,
          deinterlace, temporal, defects, chunk_frames, tile, face_restorer, face_fidelity, upscaler, fidelity,
          precision, scale_method, adapt, faces_without_restorer, restart, retry_failed, preview, executor, models_dirs,
          jobs_dir) -> None:
    """Restore videos (files, or folders of them): one job each, shot by shot, keeping timing and audio.
    Running it again resumes where it stopped."""
    from ..errors import UsageError
    from ..executors import open_executor
    from ..jobs.store import JobStore
    from ..media.video import EncodeSettings, check_encoder, check_output
    from ..pipeline.video import (
        VideoJobOptions,
        find_videos,
        open_video_job,
        output_for,
    )

    check_encoder(codec)
    options = VideoJobOptions(scale=int(scale), codec=codec, crf=crf, preset=preset, backend=backend,
                              face_detector=face_detector, detect_every=detect_every, chunk_frames=chunk_frames,
                              deinterlace=deinterlace, temporal=temporal, defects=defects, adapt=adapt,
                              faces_without_restorer=faces_without_restorer,
                              tile=tile, device=device, batch=batch,
                              models_dirs=tuple(models_dirs),
                              face_restorer=face_restorer, face_fidelity=face_fidelity, precision=precision,
                              **scale_method_setting(scale_method, scale),
                              **upscaler_settings(upscaler or "auto", fidelity, models_dirs, on_cpu(device)))
    videos = find_videos(inputs)
    if not videos:
        raise UsageError(f"no video files in {', '.join(map(str, inputs))}")
    for path in videos:  # every output can be written, before hours of work on the first video
        check_output(output_for(path, output, len(videos) > 1), EncodeSettings(codec, crf, preset))
    if preview:
        return _preview_videos(videos, output, options, preview, jobs_dir)
    worst = 0
    with JobStore.open(jobs_dir) as store, open_executor(executor) as chosen:
        for path in videos:
            try:
                video_job = open_video_job(store, path, output_for(path, output, len(videos) > 1), options)
                tell_job(video_job.job.id, store.jobs_dir)
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
    from ..jobs.store import resolve_jobs_dir
    from ..pipeline.video import output_for
    from ..report.preview import preview_video

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
    from ..pipeline.video import damage_note

    if note := damage_note(store.items(job.id)):
        click.echo(f"note: {note}", err=True)
    return 0


def _resume_video(store, job, device, retry_failed, upscaler, fidelity, precision, models_dirs, executor) -> None:
    from ..executors import open_executor
    from ..pipeline.video import VideoJob, VideoJobOptions, open_video_job

    options = VideoJobOptions.from_identity(job.options, device=device, models_dirs=tuple(models_dirs),
                                            precision=precision)
    job, options = _with_upscaler(store, job, options, upscaler, fidelity, models_dirs, open_video_job)
    video_job = VideoJob(store, job, options)
    with open_executor(executor) as chosen:
        summary = _run_recorded(store, video_job, retry_failed=retry_failed, work=chosen.work_for(video_job))
    if _video_report(store, job, summary):
        raise click.exceptions.Exit(1)


# ---------------------------------------------------------------------------------------------- train
