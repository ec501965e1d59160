"""The command line, one module per command group: ``jobs`` (run, video, resume, jobs, status, report),
``bench``, ``models``, ``train``; the options they share in ``options``; ``reference`` writes their help
into docs/commands.md. This is the one place where errors become messages and exit codes: 0 all done,
1 something failed, 2 usage errors."""
from __future__ import annotations

import sys

import click

from ..errors import ArchiveRestoreError
from . import bench, bench_faces, jobs, models, show, supervise, train  # noqa: F401 - bench_faces adds to bench


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


for command in (jobs.run, jobs.video, jobs.resume, show.jobs, show.status, show.report, train.train, bench.bench,
                models.models):
    cli.add_command(command)


def main() -> None:
    supervise.watched_start(sys.argv[1:])
    cli(prog_name="archive-restore")

