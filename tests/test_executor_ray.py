"""``--executor ray`` on a real local Ray cluster (a head node started here on 127.0.0.1 with 2 CPUs,
stopped after): a photo job and a two-chunk video job give byte-identical outputs to the local
executor, a worker SIGKILLed mid-job loses nothing, an unreachable address fails fast with its
message. Skipped when Ray is not installed (``pip install -e '.[ray]'``)."""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from video_clips import make_clip

from archive_restore.cli import cli
from archive_restore.executors.ray_cluster.worker import AccessCheck
from archive_restore.jobs.store import JobStore

START_TIMEOUT_S = 90


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def ray_cluster():
    """A Ray head node on 127.0.0.1 with 2 CPUs, in its own temp folder: (address, the head's process)."""
    pytest.importorskip("ray", reason="Ray is not installed (pip install -e '.[ray]')")
    port, temp = _free_port(), tempfile.mkdtemp(prefix="ray")  # short: Ray's socket paths must stay short
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAY_AUTH_MODE", "disabled")  # the test cluster and its driver, without token files
        patch.delenv("RAY_ADDRESS", raising=False)
        head = subprocess.Popen(
            [str(Path(sys.executable).with_name("ray")), "start", "--head", "--block", "--node-ip-address",
             "127.0.0.1", "--port", str(port), "--num-cpus", "2", "--num-gpus", "0", "--include-dashboard", "false",
             "--temp-dir", temp, "--disable-usage-stats"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            while not _answers(port):
                assert head.poll() is None, f"ray start exited with {head.returncode}"
                assert time.monotonic() < deadline, "the Ray head did not start in time"
                time.sleep(0.2)
            yield f"127.0.0.1:{port}", head
        finally:
            head.send_signal(signal.SIGTERM)  # `ray start --block` stops what it started
            try:
                head.wait(timeout=30)
            except subprocess.TimeoutExpired:
                head.kill()
            shutil.rmtree(temp, ignore_errors=True)


def _cli(args: list, jobs: Path, models: Path):
    full = [str(a) for a in args] + ["--jobs-dir", str(jobs), "--models-dir", str(models)]
    return CliRunner().invoke(cli, full, catch_exceptions=False)


def _on_ray(address: str) -> list[str]:
    return ["--executor", "ray", "--ray-address", address, "--workers", "2"]


def _photos(root: Path, count: int, size: tuple[int, int] = (24, 32)) -> None:
    rng = np.random.default_rng(3)
    for index in range(count):
        folder = root / f"roll{index % 2}" / ("scans" if index % 3 == 0 else "")
        folder.mkdir(parents=True, exist_ok=True)
        pixels = (rng.random((*size, 3)) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"p{index:02d}.{'png' if index % 2 else 'jpg'}", quality=90)


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _items(jobs: Path, output: Path):
    with JobStore.open(jobs) as store:
        (job,) = [j for j in store.jobs() if j.output == str(output)]
        return store.items(job.id)


def test_photo_job_on_ray_gives_the_local_files(tmp_path, tiny_models, ray_cluster):
    inp, jobs = tmp_path / "in", tmp_path / "jobs"
    _photos(inp, 6)
    photo = ["--scale", "2", "--face-detector", "haar"]
    local = _cli(["run", inp, "-o", tmp_path / "local", *photo], jobs, tiny_models)
    assert local.exit_code == 0, local.output
    remote = _cli(["run", inp, "-o", tmp_path / "ray", *photo, *_on_ray(ray_cluster[0])], jobs, tiny_models)
    assert remote.exit_code == 0, remote.output
    assert "2 Ray worker(s)" in remote.output and "6 done, 0 failed" in remote.output
    assert _files(tmp_path / "ray") == _files(tmp_path / "local") and len(_files(tmp_path / "local")) == 6
    assert all(i.status == "done" and i.attempts == 1 for i in _items(jobs, tmp_path / "ray"))


def test_photo_analysis_runs_on_the_workers_and_gives_the_local_codes(tmp_path, tiny_models, ray_cluster, face_rgb):
    """Faces found and codes read on the workers (the driver never loads a network); the photos' own,
    folder and job codes and the files are the local executor's."""
    from archive_restore.executors import ExecutorSettings, open_executor
    from archive_restore.pipeline.photo import PhotoJobOptions, open_photo_job

    inp = tmp_path / "in"
    _photos(inp, 4, size=(48, 64))  # no face: their code is their folder's, or the job's
    Image.fromarray(face_rgb).save(inp / "roll0" / "face.png")
    Image.fromarray(face_rgb[:, ::-1]).convert("L").save(inp / "roll0" / "scans" / "mirrored.png")
    options = PhotoJobOptions(scale=2, face_detector="haar", models_dirs=(tiny_models,))
    found = {}
    for name, settings in (("local", ExecutorSettings()), ("ray", ExecutorSettings("ray", ray_cluster[0], 2))):
        with JobStore.open(tmp_path / "jobs") as store:
            job = open_photo_job(store, inp, tmp_path / name, options, progress=False)
            with open_executor(settings) as executor:
                summary = job.run(work=executor.work_for(job))
            assert summary.done == 6 and summary.failed == 0
            if name == "ray":
                assert job._engine is None  # the faces were analysed on the workers
            found[name] = {i.key: (i.faces, i.code_source, i.code, i.extra.get("face_codes")) for i in
                           store.items(job.job.id)}
    assert found["ray"] == found["local"]
    sources = {key: source for key, (_, source, _, _) in found["local"].items()}
    assert sources["roll0/face.png"] == "faces" and "folder" in sources.values()  # faces found, codes shared
    assert _files(tmp_path / "ray") == _files(tmp_path / "local")


def test_two_chunk_video_on_ray_gives_the_local_file(tmp_path, tiny_models, ray_cluster):
    clip = make_clip(tmp_path / "film.mp4", count=12)
    jobs, fast = tmp_path / "jobs", ["--preset", "ultrafast", "--face-detector", "haar", "--scale", "2",
                                     "--chunk-frames", "6"]
    local = _cli(["video", clip.path, "-o", tmp_path / "local.mp4", *fast], jobs, tiny_models)
    assert local.exit_code == 0, local.output
    remote = _cli(["video", clip.path, "-o", tmp_path / "ray.mp4", *fast, *_on_ray(ray_cluster[0])], jobs, tiny_models)
    assert remote.exit_code == 0, remote.output
    assert (tmp_path / "ray.mp4").read_bytes() == (tmp_path / "local.mp4").read_bytes()
    items = _items(jobs, tmp_path / "ray.mp4")
    assert [i.key for i in items] == ["analysis", "shot0000.000", "shot0000.001", "finish"]
    assert all(i.status == "done" and i.attempts == 1 for i in items)


def _descendants(pid: int) -> dict[int, str]:
    """The processes under ``pid`` and their command lines (Ray names its workers ray::Class)."""
    parents, lines = {}, {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                lines[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = {}, [pid]
    while frontier:
        parent = frontier.pop()
        for child, up in parents.items():
            if up == parent and child not in found:
                found[child] = lines.get(child, "")
                frontier.append(child)
    return found


def test_a_worker_killed_mid_job_loses_nothing(tmp_path, tiny_models, ray_cluster):
    address, head = ray_cluster
    inp, out, jobs = tmp_path / "in", tmp_path / "ray", tmp_path / "jobs"
    _photos(inp, 12, size=(96, 128))
    photo = ["--scale", "4", "--face-detector", "haar"]
    killed: list[int] = []

    def kill_a_worker() -> None:  # once the first photo is out: both workers have items in hand
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline and not killed:
            if out.is_dir() and any(p.is_file() and not p.name.startswith(".") for p in out.rglob("*")):
                workers = [pid for pid, line in _descendants(head.pid).items() if "PipelineWorker" in line]
                if workers:
                    os.kill(workers[0], signal.SIGKILL)
                    killed.append(workers[0])
            time.sleep(0.01)

    killer = threading.Thread(target=kill_a_worker, daemon=True)
    killer.start()
    remote = _cli(["run", inp, "-o", out, *photo, *_on_ray(address)], jobs, tiny_models)
    killer.join(timeout=5)
    assert killed, "no worker was killed"
    assert remote.exit_code == 0, remote.output
    assert "12 done, 0 failed" in remote.output
    items = _items(jobs, out)
    assert all(i.status == "done" for i in items) and len(items) == 12
    assert max(i.attempts for i in items) == 2  # what the killed worker had in hand was done again elsewhere
    local = _cli(["run", inp, "-o", tmp_path / "local", *photo], jobs, tiny_models)
    assert local.exit_code == 0, local.output
    assert _files(out) == _files(tmp_path / "local")  # every photo once, nothing half-written left


@pytest.fixture
def second_node(ray_cluster):
    """A second node joined to the test cluster (``ray start --address``, 1 CPU, its own raylet on 127.0.0.1):
    its process, for the test to take the node down."""
    address, _ = ray_cluster
    ray = str(Path(sys.executable).with_name("ray"))
    deadline = time.monotonic() + START_TIMEOUT_S
    while _active_nodes(ray, address) != 1:  # an earlier test's lost node is marked dead (its health checks) first
        assert time.monotonic() < deadline, "an earlier test's second node was not marked dead in time"
        time.sleep(0.5)
    node = subprocess.Popen([ray, "start", "--address", address, "--block", "--node-ip-address", "127.0.0.1",
                             "--num-cpus", "1", "--num-gpus", "0", "--disable-usage-stats"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while _active_nodes(ray, address) != 2:
            assert node.poll() is None, f"the second node's ray start exited with {node.returncode}"
            assert time.monotonic() < deadline, "the second node did not join in time"
            time.sleep(0.5)
        yield node
    finally:
        node.send_signal(signal.SIGTERM)
        try:
            node.wait(timeout=30)
        except subprocess.TimeoutExpired:
            node.kill()


def _active_nodes(ray: str, address: str) -> int:
    """How many nodes `ray status` lists as active."""
    said = subprocess.run([ray, "status", "--address", address], capture_output=True, text=True).stdout
    active = said.split("Active:", 1)[-1].split("Pending:", 1)[0] if "Active:" in said else ""
    return sum(line.strip().startswith("1 node_") for line in active.splitlines())


def _kill_raylet_when(node: subprocess.Popen, ready, killed: list[int]) -> threading.Thread:
    """A thread that SIGKILLs ``node``'s raylet (the node is lost: its workers die with it) once ``ready()``
    and a worker runs there."""
    def watch() -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline and not killed:
            found = _descendants(node.pid)
            raylets = [pid for pid, line in found.items() if "raylet/raylet" in line]
            if raylets and ready() and any("PipelineWorker" in line for line in found.values()):
                os.kill(raylets[0], signal.SIGKILL)
                killed.append(raylets[0])
            time.sleep(0.05)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_a_node_lost_mid_photo_job_costs_nothing_and_changes_no_byte(tmp_path, tiny_models, ray_cluster, second_node):
    """Three workers on two nodes (two on the head, one on the second); the second node's raylet is killed
    mid-job: what its worker had goes back to pending, the head's workers finish the job, and the files
    are the local executor's byte for byte."""
    inp, out, jobs = tmp_path / "in", tmp_path / "ray", tmp_path / "jobs"
    _photos(inp, 12, size=(96, 128))
    photo = ["--scale", "4", "--face-detector", "haar"]
    killed: list[int] = []

    def written() -> bool:  # a photo is out: every worker has items in hand
        return out.is_dir() and any(p.is_file() and not p.name.startswith(".") for p in out.rglob("*"))

    watcher = _kill_raylet_when(second_node, written, killed)
    remote = _cli(["run", inp, "-o", out, *photo, "--executor", "ray", "--ray-address", ray_cluster[0],
                   "--workers", "3"], jobs, tiny_models)
    watcher.join(timeout=5)
    assert killed, "the second node was not taken down"
    assert remote.exit_code == 0, remote.output
    assert "3 Ray worker(s) on" in remote.output and "12 done, 0 failed" in remote.output
    assert "Ray worker(s) died during the job" in remote.output
    items = _items(jobs, out)
    assert all(i.status == "done" for i in items) and max(i.attempts for i in items) == 2
    local = _cli(["run", inp, "-o", tmp_path / "local", *photo], jobs, tiny_models)
    assert local.exit_code == 0, local.output
    assert _files(out) == _files(tmp_path / "local") and len(_files(out)) == 12


def test_a_node_lost_mid_video_job_costs_nothing_and_changes_no_byte(tmp_path, tiny_models, ray_cluster, second_node):
    """The same for a video's chunks. The pool hands items out only once all three workers have started, one
    each in turn: from the first chunk running on, the second node's worker has one."""
    clip = make_clip(tmp_path / "film.mp4", count=24)
    jobs, fast = tmp_path / "jobs", ["--preset", "ultrafast", "--face-detector", "haar", "--scale", "2",
                                     "--chunk-frames", "6"]
    out, killed = tmp_path / "ray.mp4", []

    def rendering() -> bool:  # chunks handed out: the second node's worker has one
        return any(i.status == "running" and i.key.startswith("shot") for i in _items_or_none(jobs, out))

    watcher = _kill_raylet_when(second_node, rendering, killed)
    remote = _cli(["video", clip.path, "-o", out, *fast, "--executor", "ray", "--ray-address", ray_cluster[0],
                   "--workers", "3"], jobs, tiny_models)
    watcher.join(timeout=5)
    assert killed, f"the second node was not taken down: {remote.output}"
    assert remote.exit_code == 0, remote.output
    local = _cli(["video", clip.path, "-o", tmp_path / "local.mp4", *fast], jobs, tiny_models)
    assert local.exit_code == 0, local.output
    assert out.read_bytes() == (tmp_path / "local.mp4").read_bytes()
    assert all(i.status == "done" for i in _items(jobs, out))


def _items_or_none(jobs: Path, output: Path) -> list:
    try:
        return _items(jobs, output)
    except Exception:  # the store or the job is not there yet
        return []


def test_workers_that_die_as_they_start_end_the_job_with_one_line(tmp_path, tiny_models, ray_cluster):
    """Every worker the pool starts is SIGKILLed as soon as it appears (a node out of memory, say): after three in
    a row the command says so in one line, with what to look at and what to run; nothing was started."""
    address, head = ray_cluster
    _photos(tmp_path / "in", 2)
    stop, killed = threading.Event(), []

    def kill_every_worker() -> None:
        while not stop.is_set():
            for pid, line in _descendants(head.pid).items():
                if "PipelineWorker" in line and pid not in killed:
                    try:
                        os.kill(pid, signal.SIGKILL)
                        killed.append(pid)
                    except OSError:
                        pass
            time.sleep(0.02)

    killer = threading.Thread(target=kill_every_worker, daemon=True)
    killer.start()
    try:
        result = CliRunner().invoke(cli, ["run", str(tmp_path / "in"), "--face-detector", "haar", *_on_ray(address),
                                          "--jobs-dir", str(tmp_path / "jobs"), "--models-dir", str(tiny_models)])
    finally:
        stop.set()
        killer.join(timeout=5)
    assert result.exit_code == 1 and len(killed) >= 3, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    if errors:  # killed before answering the start checks: the pool gives up after three
        assert len(errors) == 1 and "3 workers in a row died as they started" in errors[0], result.output
        assert "run the same command again" in errors[0]
    else:  # a worker answered its checks in the instant before its kill: each photo failed after 3 workers died
        assert "0 done, 2 failed" in result.output and result.output.count("3 workers died working on it") == 2


def test_an_unreachable_address_fails_fast_with_the_message(tmp_path, tiny_models):
    pytest.importorskip("ray", reason="Ray is not installed (pip install -e '.[ray]')")
    _photos(tmp_path / "in", 1)
    started = time.monotonic()
    result = _cli(["run", tmp_path / "in", "--executor", "ray", "--ray-address", f"127.0.0.1:{_free_port()}"],
                  tmp_path / "jobs", tiny_models)
    assert result.exit_code == 1 and time.monotonic() - started < 15
    assert "error: cannot reach the Ray cluster at 127.0.0.1:" in result.output
    assert "ray start --head" in result.output


def test_a_local_instance_that_cannot_start_is_said_in_one_line(tmp_path, tiny_models):
    pytest.importorskip("ray", reason="Ray is not installed (pip install -e '.[ray]')")
    _photos(tmp_path / "in", 1)
    (tmp_path / "a_file").write_text("not a folder")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_TMPDIR"] = str(tmp_path / "a_file")  # where Ray keeps its sockets and logs: not a folder
    result = subprocess.run([sys.executable, "-m", "archive_restore", "run", str(tmp_path / "in"), "--executor", "ray",
                             "--face-detector", "haar", "--jobs-dir", str(tmp_path / "jobs"), "--models-dir",
                             str(tiny_models)], env=env, capture_output=True, text=True, timeout=START_TIMEOUT_S)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode == 1 and len(errors) == 1, result.stderr[-2000:]
    assert errors[0].startswith("error: cannot start a local Ray instance: ") and "RAY_TMPDIR" in errors[0]


def test_without_ray_installed_the_message_says_what_to_install(tmp_path, tiny_models, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    _photos(tmp_path / "in", 1)
    result = _cli(["run", tmp_path / "in", "--executor", "ray"], tmp_path / "jobs", tiny_models)
    assert result.exit_code == 1
    assert "needs Ray, which is not installed here: pip install 'archive-restore[ray]'" in result.output


def test_ray_options_without_the_ray_executor_are_a_usage_error(tmp_path, tiny_models):
    _photos(tmp_path / "in", 1)
    result = _cli(["run", tmp_path / "in", "--workers", "2"], tmp_path / "jobs", tiny_models)
    assert result.exit_code == 2 and "--workers apply to --executor ray only" in result.output


def test_a_worker_that_does_not_see_the_drivers_folder_says_so(tmp_path):
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / ".token").touch()
    seen = AccessCheck("the output folder", str(tmp_path / "shared"), write=True, token=".token")
    assert seen.problem() is None
    elsewhere = AccessCheck("the output folder", str(tmp_path / "shared"), write=True, token=".other")
    assert "does not see the output folder" in elsewhere.problem()
    assert "cannot read the input" in AccessCheck("the input", str(tmp_path / "missing")).problem()


def _claimed(jobs: Path) -> int:
    """Items the driver has handed out or finished (0 while the store or its job is not there yet)."""
    try:
        with JobStore.open(jobs) as store:
            return sum(i.status in ("running", "done") for j in store.jobs() for i in store.items(j.id))
    except Exception:
        return 0


def test_a_lost_node_is_said_in_one_line_and_resume_goes_on(tmp_path, tiny_models):
    """The node the driver's own Ray instance runs on dies mid-job (its raylet SIGKILLed): Ray ends the
    driver from its C++ core, where nothing of ours can speak; the watching parent says what happened,
    what is kept and what to run, exit 1. ``resume`` then finishes the job, and no check file stays."""
    pytest.importorskip("ray", reason="Ray is not installed (pip install -e '.[ray]')")
    inp, out, jobs = tmp_path / "in", tmp_path / "out", tmp_path / "jobs"
    _photos(inp, 40, size=(96, 128))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RAY_AUTH_MODE="disabled", RAY_TMPDIR=tempfile.mkdtemp(prefix="ray"))
    command = [sys.executable, "-m", "archive_restore", "run", str(inp), "-o", str(out), "--scale", "4",
               "--face-detector", "haar", "--executor", "ray", "--workers", "2", "--jobs-dir", str(jobs),
               "--models-dir", str(tiny_models)]
    run = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           start_new_session=True)  # its own process group: what Ray leaves of it is stopped after
    try:
        deadline, killed = time.monotonic() + START_TIMEOUT_S, None
        while killed is None and time.monotonic() < deadline and run.poll() is None:
            if _claimed(jobs):
                raylets = [pid for pid, line in _descendants(run.pid).items() if "raylet/raylet" in line]
                if raylets:
                    os.kill(raylets[0], signal.SIGKILL)
                    killed = raylets[0]
            time.sleep(0.1)
        said, _ = run.communicate(timeout=START_TIMEOUT_S)
    finally:
        try:
            os.killpg(run.pid, signal.SIGKILL)  # the lost instance's GCS and workers, and the run if still there
        except OSError:
            pass
        run.wait()
    assert killed, f"the node was not killed (exit {run.returncode}): {said[-2000:]}"
    errors = [line for line in said.splitlines() if line.startswith("error: ")]
    assert run.returncode == 1 and len(errors) == 1, said[-3000:]
    assert "Ray cluster" in errors[0] and "items are done and kept" in errors[0] and "resume" in errors[0]
    job_id = errors[0].split("archive-restore resume ")[1].split()[0]
    resumed = _cli(["resume", job_id], jobs, tiny_models)
    assert resumed.exit_code == 0, resumed.output
    assert "40 done, 0 failed" in resumed.output
    assert not list(out.rglob(".archive-restore-check.*"))


def test_the_pool_says_when_no_node_is_alive_or_the_head_is_gone():
    """What a wait in slices looks at between them (a dead node's answers never come): no node alive, or a
    head that no longer answers, is a ClusterError naming it."""
    from archive_restore.errors import ClusterError
    from archive_restore.executors.ray_cluster.pool import WorkerPool

    class FakeRay:
        def __init__(self, nodes):
            self._nodes = nodes

        def remote(self, cls):
            return self

        def options(self, **kw):
            return self

        def nodes(self):
            if isinstance(self._nodes, Exception):
                raise self._nodes
            return self._nodes

    WorkerPool(FakeRay([{"Alive": True}, {"Alive": False}]), 1, {}, {}).check_alive()  # one is enough
    with pytest.raises(ClusterError, match="every node of the Ray cluster is dead.*10.0.0.7"):
        WorkerPool(FakeRay([{"Alive": False, "NodeManagerAddress": "10.0.0.7"}]), 1, {}, {}).check_alive()
    with pytest.raises(ClusterError, match="head no longer answers"):
        WorkerPool(FakeRay(ConnectionError("GCS unreachable")), 1, {}, {}).check_alive()


def test_a_cluster_whose_head_dies_mid_job_is_said_in_one_line(tmp_path, tiny_models):
    """The command runs against a cluster (--ray-address) whose head node dies mid-job (every process of its
    `ray start` SIGKILLed): the command ends with one line saying the cluster is gone, what is kept and what to
    run, exit 1; never silence."""
    pytest.importorskip("ray", reason="Ray is not installed (pip install -e '.[ray]')")
    port, temp = _free_port(), tempfile.mkdtemp(prefix="ray")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_AUTH_MODE"] = "disabled"
    head = subprocess.Popen(
        [str(Path(sys.executable).with_name("ray")), "start", "--head", "--block", "--node-ip-address", "127.0.0.1",
         "--port", str(port), "--num-cpus", "2", "--num-gpus", "0", "--include-dashboard", "false",
         "--temp-dir", temp, "--disable-usage-stats"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    inp, out, jobs = tmp_path / "in", tmp_path / "out", tmp_path / "jobs"
    _photos(inp, 40, size=(96, 128))
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _answers(port):
            assert head.poll() is None and time.monotonic() < deadline, "the test cluster's head did not start"
            time.sleep(0.2)
        run = subprocess.Popen([sys.executable, "-m", "archive_restore", "run", str(inp), "-o", str(out),
                                "--scale", "4", "--face-detector", "haar", "--executor", "ray",
                                "--ray-address", f"127.0.0.1:{port}", "--workers", "2", "--jobs-dir", str(jobs),
                                "--models-dir", str(tiny_models)],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
        while not _claimed(jobs) and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        os.killpg(head.pid, signal.SIGKILL)  # the head and everything of it: its GCS, raylet and workers
        said, _ = run.communicate(timeout=3 * START_TIMEOUT_S)
    finally:
        for process in [head, *([run] if "run" in locals() else [])]:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except OSError:
                pass
            process.wait()
        shutil.rmtree(temp, ignore_errors=True)
    errors = [line for line in said.splitlines() if line.startswith("error: ")]
    assert run.returncode == 1 and len(errors) == 1, said[-3000:]
    assert "Ray cluster" in errors[0] and "items are done and kept" in errors[0], errors[0]
    job_id = re.search(r"archive-restore resume ([0-9a-f]{12})", errors[0]).group(1)
    resumed = _cli(["resume", job_id], jobs, tiny_models)  # here, on the local executor
    assert resumed.exit_code == 0 and "40 done, 0 failed" in resumed.output, resumed.output
    assert not list(out.rglob(".archive-restore-check.*"))  # what the lost run left is cleared
