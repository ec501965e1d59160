"""``models``: the third-party model files the product can use: list, fetch, verify, locate."""
from __future__ import annotations

import click

from ..errors import ArchiveRestoreError
from .options import models_dir_option


@click.group()
def models() -> None:
    """Third-party model files (face restorer, detectors, parsing): list, fetch, verify, locate."""


@models.command("list")
@models_dir_option
def models_list(models_dirs) -> None:
    """Every known model: where it is found (the first copy is used) or how to fetch it."""
    from ..weights.downloads import MANIFEST, locate
    from ..weights.folders import MODEL_FILES, find_model

    for item in MANIFEST.values():
        found = locate(item, models_dirs)
        where = f"present: {found[0]}" if found else f"missing (archive-restore models fetch {item.name})"
        click.echo(f"{item.name:<26} {item.filename:<38} {where}")
        click.echo(f"{'':<26} {item.used_by}; {item.licence}; {item.url}")
    from ..upscalers.upscaler import available_upscalers, resolve_upscaler

    click.echo("upscalers (--upscaler):")
    for ref in available_upscalers(models_dirs):
        click.echo(f"{ref.name:<26} {ref.path}")
        click.echo(f"{'':<26} x{ref.scale}; {ref.source}")
    click.echo(f"{'condsr':<26} built in: our CondSR alone (no upscaler file)")
    for label, video_on_cpu in (("auto picks", False), ("  for video on a CPU", True)):
        auto = resolve_upscaler("auto", models_dirs, video_on_cpu)
        click.echo(f"{label:<26} {auto.name}" + (f" ({auto.path})" if auto.path else ""))
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
@models_dir_option
def models_fetch(names, trust_unverified, quiet, models_dirs) -> None:
    """Download NAME... (or `all`) from the official URL into the first --models-dir (else the first
    $ARCHIVE_RESTORE_MODELS folder, else ~/.cache/archive-restore): resumable, sha256-checked."""
    from ..errors import DownloadError
    from ..weights.downloads import MANIFEST, download_dir, entry, fetch

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
@models_dir_option
def models_verify(models_dirs) -> None:
    """The sha256 of every model file present, against the manifest; exit 1 on a mismatch."""
    from ..weights.downloads import MANIFEST, locate, verify

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
@models_dir_option
def models_path(name, models_dirs) -> None:
    """The file used for NAME (a name from `models list`); exit 1 when it is missing."""
    from ..weights.downloads import entry, find
    from ..weights.folders import MODEL_FILES, find_model

    click.echo(str(find_model(name, models_dirs) if name in MODEL_FILES else find(entry(name), models_dirs)))
