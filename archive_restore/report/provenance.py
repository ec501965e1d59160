"""What a job ran on: the device and every network file (with its sha256), recorded per run.

The job store keeps what a job *is* (its input, output and the options that change the result) but
not the device nor which model files were found, since neither is part of a job's identity. A run
appends them to ``<job folder>/runs.json`` (``record_engine``), and the report shows them.
"""
from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..weights.downloads import sha256_file
from ..weights.folders import find_model

RUNS_FILE = "runs.json"


def record_engine(job_dir: Path, engine: Any) -> dict:
    """Append what ``engine`` (a ``pipeline.engine.Engine``) ran with to ``job_dir/runs.json``."""
    import torch  # loaded already by the engine; not by ``report``

    run = {"finished": datetime.now(timezone.utc).isoformat(timespec="seconds"), "device": str(engine.device),
           "torch": torch.__version__, "detector": engine.detector.name,
           "models_dirs": [os.fspath(d) for d in engine.options.models_dirs], "networks": networks(engine)}
    runs = read_runs(job_dir) + [run]
    path = job_dir / RUNS_FILE
    tmp = path.with_name(f".{RUNS_FILE}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(runs, indent=1))
    os.replace(tmp, path)
    return run


def run_recorded(store: Any, pipeline_job: Any, **run_options: Any) -> Any:
    """``pipeline_job.run(**run_options)`` (a photo or video job), then what its engine ran with
    appended to the job's ``runs.json``: only when the run made its engine (a run with nothing left
    to do makes none), and also when the run stops with an error."""
    try:
        return pipeline_job.run(**run_options)
    finally:
        if pipeline_job._engine is not None:  # made on the first item the run worked on
            record_engine(store.job_dir(pipeline_job.job.id), pipeline_job._engine)


def read_runs(job_dir: Path) -> list[dict]:
    """The recorded runs of a job, oldest first ([] for a job run before runs were recorded)."""
    try:
        runs = json.loads((job_dir / RUNS_FILE).read_text())
    except (OSError, ValueError):
        return []
    return runs if isinstance(runs, list) else []


def networks(engine: Any) -> list[dict]:
    """(role, file, sha256) of every network file the engine loaded, in the order they act."""
    dirs = list(engine.options.models_dirs)
    found: list[tuple[str, Path, str | None]] = [("face detector", _detector_file(engine.detector), None)]
    if engine.restorer is not None:
        found.append(("face restorer", engine.restorer.path, None))
        found.append(("paired code encoder (DegEncoder)", find_model("deg_encoder", dirs), None))
    if engine.parser is not None:
        found.append(("face parser", engine.parser.path, None))
    found.append(("blind code encoder (BlindDegEncoder)", find_model("blind_encoder", dirs), None))
    if engine.cleanup is not None:
        found.append(("cleanup (Cleanup)", find_model("cleanup_compact", dirs), None))
        found.append(("upscaler", Path(engine.options.upscaler), engine.options.upscaler_sha256))
    found.append(("restorer (CondSR)", find_model("condsr_compact", dirs), None))
    return [{"role": role, "file": os.fspath(path), "sha256": sha or sha256_file(Path(path))}
            for role, path, sha in found if path is not None]


def _detector_file(detector: Any) -> Path | None:
    """The weights file of a RetinaFace or YuNet detector; None for Haar (built into OpenCV)."""
    for attr in ("weights", "model"):
        value = getattr(detector, attr, None)
        if isinstance(value, Path):
            return value
    return None
