"""The commands that show jobs: ``jobs`` lists them, ``status`` shows one, ``report`` writes one as a web page."""
from __future__ import annotations

import json
from pathlib import Path

import click

from .options import jobs_dir_option


@click.command()
@click.option("--repair", is_flag=True,
              help="The job database is damaged: move it aside and build a new one from every row it still "
                   "holds (finished items are kept).")
@jobs_dir_option
def jobs(repair, jobs_dir) -> None:
    """List the jobs in the job database, newest first."""
    from ..jobs.store import JobStore

    if repair:
        from ..jobs.repair import repair_database

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


@click.command()
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="The job and every item as JSON, for scripts.")
@click.option("--all", "every", is_flag=True, help="List every photo; without it a job of more than 200 lists "
              "200 of them, those not done first.")
@jobs_dir_option
def status(job_id, as_json, every, jobs_dir) -> None:
    """A job's state, its item counts and its items (status, error, code source, faces, output)."""
    from dataclasses import asdict

    from ..jobs.store import JobStore
    from ..pipeline.status import photo_lines, video_lines

    with JobStore.open(jobs_dir) as store:
        job = store.job(job_id)
        if as_json:
            data = {"job": asdict(job), "summary": store.summary(job.id), "locked_by": store.locked_by(job.id),
                    "items": [asdict(i) for i in store.items(job.id)]}
            click.echo(json.dumps(data, indent=2, default=str))
            return
        click.echo(f"job {job.id} ({job.kind}, {job.status}): {job.input} -> {job.output}")
        click.echo(f"options: {json.dumps(job.options, sort_keys=True)}")
        holder = store.locked_by(job.id)
        if holder:
            click.echo(f"being worked on by process {holder}")
        if job.kind == "video":
            click.echo("\n".join(video_lines(store.items(job.id))))
            return
        click.echo("\n".join(photo_lines(store, job, every)))


@click.command()
@click.argument("job_id")
@click.option("-o", "--output", "folder", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for the report [default: the job's folder report/].")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@jobs_dir_option
def report(job_id, folder, quiet, jobs_dir) -> None:
    """A job as a web page, FOLDER/index.html (works offline, from file://): before/after sliders, detail
    crops, face boxes and why anything failed; per video its shots, face tracks and chunk timings."""
    from ..jobs.store import JobStore
    from ..report import write_report

    with JobStore.open(jobs_dir) as store:
        index = write_report(store, store.job(job_id), folder, progress=not quiet)
    click.echo(f"report: {index.as_uri()}")
