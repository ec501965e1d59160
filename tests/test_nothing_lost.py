"""Nothing lost, whatever happens to the photo job: photos replaced, edited, touched or deleted between
runs, an output folder inside the input, a full disk (a small tmpfs, when run as root), decoder
chatter, and a damaged, emptied or locked job database.

Every test drives the real ``archive-restore`` command in-process (click's CliRunner) with the tiny
random-weight networks of ``tiny_models`` and tiny photos made here.
"""
from __future__ import annotations

import os
import re
import sqlite3
import subprocess
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result
from PIL import Image

from archive_restore.jobs import store as store_module
from archive_restore.cli import cli
from archive_restore.media import walk
from archive_restore.media.image import Photo, write_image
from archive_restore.jobs.store import DB_NAME, ItemSpec, JobStore


def _run(args: list, jobs: Path, models: Path | None = None, expect: int | None = 0) -> Result:
    full = [str(a) for a in args] + ["--jobs-dir", str(jobs)]
    if models is not None:
        full += ["--models-dir", str(models)]
    result = CliRunner().invoke(cli, full, catch_exceptions=False)
    if expect is not None:
        assert result.exit_code == expect, f"exit {result.exit_code}\n{result.output}"
    return result


def _restore(inp: Path, out: Path, jobs: Path, models: Path, expect: int | None = 0) -> Result:
    return _run(["run", inp, "-o", out, "--face-detector", "haar", "--scale", "1"], jobs, models, expect)


def _items(jobs: Path) -> dict[str, dict]:
    with JobStore.open(jobs) as store:
        (job,) = store.jobs()
        return {i.key: {"status": i.status, "attempts": i.attempts, "sha256": i.sha256, "extra": i.extra,
                        "error": i.error} for i in store.items(job.id)}


def _photos(folder: Path, count: int, seed: int = 0, size: tuple[int, int] = (20, 28)) -> list[Path]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        path = folder / f"p{index:03d}.png"
        Image.fromarray((rng.random((*size, 3)) * 255).astype(np.uint8)).save(path)
        paths.append(path)
    return paths


def _outputs(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def _temps(*folders: Path) -> list[Path]:
    return [p for f in folders for p in f.rglob(".*.tmp*")]


# ----------------------------------------------------------------------------------- files that change

def test_a_replaced_or_edited_photo_is_redone_a_touched_one_is_not(tmp_path, tiny_models):
    inp, out, jobs = tmp_path / "in", tmp_path / "out", tmp_path / "jobs"
    a, b, _ = _photos(inp, 3)
    _restore(inp, out, jobs, tiny_models)
    first = _outputs(out)
    before = _items(jobs)
    assert all(item["sha256"] == walk.content_sha256(inp / key) for key, item in before.items())

    Image.fromarray(np.full((20, 28, 3), 200, np.uint8)).save(a)     # replaced: other content
    os.utime(b, (1_500_000_000, 1_500_000_000))                      # touched: same bytes, other mtime
    rerun = _restore(inp, out, jobs, tiny_models)

    assert "1 photo(s) changed since they were read, done again: p000.png" in rerun.stderr
    after = _items(jobs)
    assert after["p000.png"]["status"] == "done" and after["p000.png"]["sha256"] == walk.content_sha256(a)
    assert _outputs(out)["p000.png"] != first["p000.png"]                    # the new photo's result
    assert _outputs(out)["p001.png"] == first["p001.png"]
    assert after["p001.png"]["attempts"] == before["p001.png"]["attempts"]   # touched: not redone
    assert after["p002.png"] == before["p002.png"]


def test_an_unchanged_folder_is_not_read_again(tmp_path, tiny_models, monkeypatch):
    inp, out, jobs = tmp_path / "in", tmp_path / "out", tmp_path / "jobs"
    _photos(inp, 4)
    _restore(inp, out, jobs, tiny_models)
    hashed = []
    from archive_restore.pipeline import photo

    real = photo.content_sha256
    monkeypatch.setattr(photo, "content_sha256", lambda path: hashed.append(path) or real(path))
    _restore(inp, out, jobs, tiny_models)
    assert hashed == []                       # size and mtime agree: no photo read
    os.utime(inp / "p003.png", (1_500_000_000, 1_500_000_000))
    _restore(inp, out, jobs, tiny_models)
    assert [p.name for p in hashed] == ["p003.png"]   # only the touched one, to learn it is unchanged


def test_a_deleted_photo_is_reported_gone_and_its_output_kept(tmp_path, tiny_models):
    inp, out, jobs = tmp_path / "in", tmp_path / "out", tmp_path / "jobs"
    photos = _photos(inp, 3)
    _restore(inp, out, jobs, tiny_models)
    kept = (out / "p001.png").read_bytes()
    photos[1].unlink()

    rerun = _restore(inp, out, jobs, tiny_models)
    assert f"1 photo(s) gone from {inp}" in rerun.stderr and "p001.png" in rerun.stderr
    assert (out / "p001.png").read_bytes() == kept
    assert _items(jobs)["p001.png"]["extra"]["gone"] is True
    again = _restore(inp, out, jobs, tiny_models)
    assert "gone" not in again.stderr                                     # said once
    job_id = re.search(r"^job ([0-9a-f]{12}):", rerun.stdout, re.MULTILINE).group(1)
    status = _run(["status", job_id], jobs).stdout
    assert re.search(r"p001.png .*\(the photo is gone from the input; its output is kept\)", status)

    Image.fromarray(np.full((20, 28, 3), 90, np.uint8)).save(photos[1])   # another photo under that name
    _restore(inp, out, jobs, tiny_models)
    assert (out / "p001.png").read_bytes() != kept and not _items(jobs)["p001.png"]["extra"].get("gone")


def test_an_output_inside_the_input_is_refused_before_anything_is_written(tmp_path, tiny_models):
    inp, jobs = tmp_path / "in", tmp_path / "jobs"
    _photos(inp, 1)
    (tmp_path / "link").symlink_to(inp)
    for output in (inp, inp / "restored", tmp_path / "link" / "restored"):
        refused = _restore(inp, output, jobs, tiny_models, expect=2)
        assert "inside the input" in refused.stderr
    assert sorted(p.name for p in inp.iterdir()) == ["p000.png"]
    with JobStore.open(jobs) as store:
        assert store.jobs() == []


def test_an_old_database_gains_the_hash_column_and_keeps_its_items(tmp_path):
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    conn = sqlite3.connect(jobs / DB_NAME)
    old = {k: v for k, v in store_module._ITEMS_SCHEMA.items() if k != "sha256"}
    types = {str: "TEXT", int: "INTEGER", float: "FLOAT"}
    conn.execute("CREATE TABLE jobs (" + ", ".join(f"[{k}] {types[v]}" for k, v in store_module._JOBS_SCHEMA.items())
                 + ", PRIMARY KEY (id))")
    conn.execute("CREATE TABLE items (" + ", ".join(f"[{k}] {types[v]}" for k, v in old.items()) + ", PRIMARY KEY (id))")
    conn.execute("INSERT INTO jobs (id, kind, input, output, options, status) VALUES ('abc', 'photos', '/i', '/o', '{}', 'done')")
    conn.execute("INSERT INTO items (job_id, key, size, mtime, status, attempts, extra) VALUES ('abc', 'a.png', 3, 1.5, 'done', 1, '{}')")
    conn.commit()
    conn.close()
    with JobStore.open(jobs) as store:
        (item,) = store.items("abc")
        assert item.status == "done" and item.sha256 is None and item.size == 3
        store.set_source(item.id, size=4, mtime=2.0, sha256="ff")
        assert store.item(item.id).sha256 == "ff"


# --------------------------------------------------------------------------------------------- disk full

@pytest.fixture
def small_tmpfs(tmp_path):
    """A 1 MiB tmpfs mounted for the test (root only), unmounted after."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True, text=True, check=False)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_stops_the_job_with_one_message_and_the_same_command_finishes(tmp_path, tiny_models,
                                                                                  small_tmpfs):
    inp, jobs, ref = tmp_path / "in", tmp_path / "jobs", tmp_path / "ref"
    _photos(inp, 6, size=(100, 150))          # ~45 KB each as x1 PNG of noise
    _restore(inp, ref, tmp_path / "ref_jobs", tiny_models)
    out = small_tmpfs / "out"
    filler = small_tmpfs / "filler"
    filler.write_bytes(b"\0" * (1024 * 1024 - 3 * 48 * 1024))   # room for about two results

    stopped = _restore(inp, out, jobs, tiny_models, expect=1)
    errors = [line for line in stopped.stderr.splitlines() if line.startswith("error:")]
    assert errors == [(f"error: no space left on {out} (No space left on device); nothing half-written was kept: "
                       "free some space there, then run the same command again to carry on")]
    assert "Traceback" not in stopped.output
    items = _items(jobs)
    assert [i["status"] for i in items.values()].count("failed") == 0
    assert 0 < [i["status"] for i in items.values()].count("done") < 6
    assert _temps(out, jobs) == []
    for name, data in _outputs(out).items():                 # what is there is complete and final
        assert data == (ref / name).read_bytes()

    filler.unlink()
    _restore(inp, out, jobs, tiny_models)
    assert _outputs(out) == _outputs(ref) and _temps(out, jobs) == []


# ------------------------------------------------------------------------------------------ quiet decoders

def test_decoder_chatter_goes_into_the_reason_not_onto_the_terminal(tmp_path, tiny_models, capfd):
    inp, out, jobs = tmp_path / "in", tmp_path / "out", tmp_path / "jobs"
    inp.mkdir()
    pixels = np.random.default_rng(3).random((24, 32, 3)).astype(np.float32)
    write_image(inp / "scan.tif", pixels, Photo(pixels=pixels, alpha=None, bit_depth=16, mode="RGB;16", format="TIFF"))
    data = bytearray((inp / "scan.tif").read_bytes())
    data[8:40] = bytes(b ^ 0xFF for b in data[8:40])          # the compressed strip's start: libtiff complains
    (inp / "scan.tif").write_bytes(bytes(data))
    profiled = Photo(pixels=pixels, alpha=None, bit_depth=16, mode="RGB;16", format="PNG", icc_profile=b"short" * 4)
    write_image(inp / "profiled.png", pixels, profiled)       # decodes, but libpng warns about the profile
    capfd.readouterr()

    _restore(inp, out, jobs, tiny_models, expect=1)
    printed = capfd.readouterr()
    assert "grfmt_tiff" not in printed.err and "[ERROR" not in printed.err and "libpng" not in printed.err
    items = _items(jobs)
    reason = items["scan.tif"]["error"]
    assert "cannot decode the image" in reason and "decoder said: [ERROR" in reason and "grfmt_tiff.cpp" in reason
    assert items["profiled.png"]["status"] == "done"
    assert items["profiled.png"]["extra"]["decoder_said"] == "libpng warning: iCCP: too short"


# ------------------------------------------------------------------------------------------- the database

def _store_with_items(jobs: Path, count: int = 400) -> str:
    with JobStore.open(jobs) as store:
        job = store.get_or_create_job("photos", "/in", "/out", {"scale": 4})
        store.add_items(job.id, [ItemSpec(f"roll/{i:04d}-{'x' * 60}.png", size=i, mtime=1.0) for i in range(count)])
        for _ in range(count // 2):
            item = store.claim_next(job.id)
            store.mark_done(item.id, output=f"/out/{item.key}")
        store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return job.id


def _damage(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "truncated":
        data = data[: len(data) * 2 // 3]
    elif how == "header":
        data[:100] = bytes(np.random.default_rng(0).integers(0, 256, 100, dtype=np.uint8))
    else:  # a page of the items table overwritten in the middle of the file
        middle = (len(data) // 4096 // 2) * 4096
        data[middle:middle + 4096] = bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8))
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["truncated", "middle", "header"])
def test_a_damaged_database_is_reported_with_the_way_out_and_repair_keeps_finished_items(tmp_path, how):
    jobs = tmp_path / "jobs"
    job_id = _store_with_items(jobs)
    with JobStore.open(jobs) as store:
        done_before = {i.key for i in store.items(job_id, status="done")}
    assert "is not damaged (SQLite's check passes): nothing to repair" in _run(["jobs", "--repair"], jobs, expect=1).stderr
    _damage(jobs / DB_NAME, how)

    refused = _run(["jobs"], jobs, expect=1)
    assert f"the job database {jobs / DB_NAME} is damaged" in refused.stderr
    assert f"archive-restore jobs --repair --jobs-dir {jobs}" in refused.stderr
    assert (jobs / DB_NAME).read_bytes()                      # never started afresh over it

    repaired = _run(["jobs", "--repair"], jobs)
    assert "moved the damaged database aside" in repaired.stdout
    assert len(list(jobs.glob(f"{DB_NAME}.damaged-*"))) >= 1
    with JobStore.open(jobs) as store:
        if how == "header":                                   # nothing of it reads
            assert store.jobs() == []
            return
        done_after = {i.key for i in store.items(job_id, status="done")}
        assert done_after <= done_before and len(done_after) >= len(done_before) // 3
        assert all(i.output == f"/out/{i.key}" for i in store.items(job_id, status="done"))


def test_an_emptied_database_beside_job_folders_is_not_a_fresh_start(tmp_path):
    jobs = tmp_path / "jobs"
    job_id = _store_with_items(jobs, count=4)
    with JobStore.open(jobs) as store:
        store.job_dir(job_id)
    for suffix in ("-wal", "-shm"):
        Path(f"{jobs / DB_NAME}{suffix}").unlink(missing_ok=True)
    (jobs / DB_NAME).write_bytes(b"")
    refused = _run(["jobs"], jobs, expect=1)
    assert "is empty (0 bytes)" in refused.stderr and "--repair" in refused.stderr
    _run(["jobs", "--repair"], jobs)
    assert "no jobs in" in _run(["jobs"], jobs).stdout


def test_a_database_locked_by_another_program_is_waited_for_then_reported(tmp_path, monkeypatch):
    jobs = tmp_path / "jobs"
    job_id = _store_with_items(jobs, count=4)
    monkeypatch.setattr(store_module, "BUSY_TIMEOUT_S", 0.3)
    other = sqlite3.connect(jobs / DB_NAME, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")                          # a database browser holding a write
    try:
        with JobStore.open(jobs) as store, pytest.raises(store_module.DatabaseBusyError,
                                                         match="stayed locked by another program for 0 s"):
            store.claim_next(job_id)
    finally:
        other.execute("ROLLBACK")
        other.close()
    with JobStore.open(jobs) as store:                        # released: works again
        assert store.claim_next(job_id) is not None


def test_repair_refuses_while_a_job_is_being_worked_on(tmp_path):
    jobs = tmp_path / "jobs"
    job_id = _store_with_items(jobs, count=4)
    _damage(jobs / DB_NAME, "header")
    with store_module.JobLock(jobs / job_id / "lock", job_id):  # a worker holding the job
        refused = _run(["jobs", "--repair"], jobs, expect=1)
    assert f"job {job_id} is being worked on by process {os.getpid()}" in refused.stderr
    assert not list(jobs.glob(f"{DB_NAME}.damaged-*"))       # nothing moved
    _run(["jobs", "--repair"], jobs)                          # once it is free
