"""Mutation testing of the job core with mutmut (``make mutate``; not part of ``make test``).

    python dev/mutate.py                 every module below, one after the other, then the kill rates
    python dev/mutate.py codes compose   those modules only
    python dev/mutate.py --sample 150 store   a seeded sample of 150 of each module's mutants
    python dev/mutate.py --sample 60 --seed 1 video   another seeded sample (seed 0 unless told)
    python dev/mutate.py --report        the kill rates of what has run so far
    python dev/mutate.py --retry codes   only the mutants of those modules that survived the last run
    python dev/mutate.py --survivors codes   the mutants that survived (``mutmut show NAME``)

Each module runs in its own mutmut process with the tests that cover it (mutmut then runs, for each
mutant, only those of them that reach the mutated function). A test that fails with no mutant at all
(someone's work in progress in a shared tree) is left out of that module's run, and said so: mutmut
needs a green start. One mutant at a time (``--max-children 1``): the machine is shared.

The kill rate is killed / tested: a mutant that timed out counts as killed (the tests noticed it), one
that no selected test reaches ("no tests") counts as surviving.
"""
from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "mutants" / "kill-rates"  # each module's results, kept when the next module runs
UNIT = ["tests/test_store.py", "tests/test_runner.py", *(f"tests/test_nothing_lost.py::{name}" for name in (
    "test_a_replaced_or_edited_photo_is_redone_a_touched_one_is_not",
    "test_an_old_database_gains_the_hash_column_and_keeps_its_items",
    "test_a_damaged_database_is_reported_with_the_way_out_and_repair_keeps_finished_items",
    "test_an_emptied_database_beside_job_folders_is_not_a_fresh_start",
    "test_a_database_locked_by_another_program_is_waited_for_then_reported",
    "test_repair_refuses_while_a_job_is_being_worked_on"))]
PAIRED_AND_PASTED = "tests/test_face_restore.py::test_photo_job_with_a_restorer_uses_paired_codes_and_pastes_faces"
FALLBACKS = "tests/test_photo_job.py::test_codes_fall_back_from_faces_to_folder_to_job_to_blind"
# module -> (its file, the tests that cover it). Each mutant runs the selected tests that reach its
# function, and a survivor runs all of them: the selections are the fast unit tests plus the job tests
# that check pixels. Job tests that start subprocesses are left out: a subprocess imports the
# unmutated package, so it cannot kill a mutant and only costs time.
MODULES = {
    "codes": ("archive_restore/codes.py", ["tests/test_engine.py", FALLBACKS, PAIRED_AND_PASTED]),
    "compose": ("archive_restore/faces/compose.py", [f"tests/test_face_restore.py::{name}" for name in (
        "test_colour_matching_moves_the_ring_statistics_to_the_picture",
        "test_compose_pastes_inside_the_oval_only_keeps_gray_gray_and_honours_fidelity", "test_to_gray_and_is_gray",
        "test_the_ring_is_where_the_mask_is_strictly_between_5_and_95_percent",
        "test_colour_matching_needs_16_pixels_of_ring_and_takes_any_float",
        "test_colour_matching_moves_each_lab_channels_mean_and_contrast_within_limits",
        "test_the_pictures_own_face_is_read_where_the_face_was_found")] + [PAIRED_AND_PASTED, "tests/test_face_parse.py"]),
    "store": ("archive_restore/jobs/store.py", UNIT),
    "runner": ("archive_restore/jobs/runner.py", UNIT),
    "photo": ("archive_restore/pipeline/photo.py", ["tests/test_photo_job.py", PAIRED_AND_PASTED,
              "tests/test_face_restore.py::test_each_face_is_restored_once_the_render_pastes_what_the_analysis_kept",
              "tests/test_nothing_lost.py"]),
    "video": ("archive_restore/pipeline/video.py",
              ["tests/test_video_job.py", "tests/test_video_job_details.py", "tests/test_video_analysis.py",
               "tests/test_damaged_video.py"]),
    "media_video": ("archive_restore/media/video.py", ["tests/test_video_media.py", "tests/test_video_media_details.py",
                                                       "tests/test_damaged_video.py"]),
}
BASELINE_S = 900  # the plain run of a module's tests takes 1-3 minutes; a hung test must not stall the run
KILLED = {"killed", "timeout", "segfault", "caught by type check"}


def mutant_prefix(path: str) -> str:
    return path.removesuffix(".py").replace("/", ".") + "."


def failing_tests(tests: list[str]) -> list[str]:
    """The node ids among ``tests`` that fail with no mutant (run once, plainly)."""
    report = ROOT / "mutants" / "baseline.xml"
    report.parent.mkdir(exist_ok=True)
    report.unlink(missing_ok=True)
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}", *tests],
                   cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False, timeout=BASELINE_S)
    failed = []
    for case in ElementTree.parse(report).iter("testcase"):
        if case.find("failure") is not None or case.find("error") is not None:
            path = case.get("classname", "").replace(".", "/") + ".py"
            failed.append(f"{path}::{case.get('name')}")
    return failed


def sampled(path: str, count: int, seed: int = 0) -> list[str]:
    """``count`` of the module's mutants, drawn with ``seed`` from those the last run generated
    (all of them when there are no more, or none was generated yet)."""
    meta = ROOT / "mutants" / (path + ".meta")
    if not meta.is_file():
        return [mutant_prefix(path) + "*"]
    names = sorted(json.loads(meta.read_text())["exit_code_by_key"])
    return names if len(names) <= count else sorted(random.Random(seed).sample(names, count))


def run_one(name: str, sample: int | None = None, retry: bool = False, seed: int = 0) -> None:
    """mutmut on one module (or a seeded sample of its mutants), in this process (its settings
    adjusted before it starts)."""
    from mutmut import configuration
    from mutmut.__main__ import _run

    path, tests = MODULES[name]
    broken = failing_tests(tests)
    for node in broken:
        print(f"left out of {name}'s run (fails with no mutant): {node}", flush=True)
    cfg = configuration.config()
    cfg.pytest_add_cli_args_test_selection = list(tests)
    cfg.pytest_add_cli_args = [*cfg.pytest_add_cli_args, *(f"--deselect={node}" for node in broken)]
    # mutmut maps tests to the functions they reach only for test names it has not seen: after tests
    # change, a stale map would run the wrong tests against a mutant
    (ROOT / "mutants" / "mutmut-stats.json").unlink(missing_ok=True)
    names = survivors(name) if retry else sampled(path, sample, seed) if sample else [mutant_prefix(path) + "*"]
    if names:
        _run(names, max_children=1)


def keep_results(name: str) -> None:
    """Copy a module's results aside (mutmut forgets every result when the next module's run starts
    with other tests selected), over those kept from its earlier runs: a rerun of some mutants
    (``--retry``, ``--sample``) updates theirs and keeps the others'."""
    meta = ROOT / "mutants" / (MODULES[name][0] + ".meta")
    if not meta.is_file():
        return
    new = json.loads(meta.read_text())
    kept = RESULTS / f"{name}.json"
    if kept.is_file():
        old = json.loads(kept.read_text())
        fresh = {k: v for k, v in new["exit_code_by_key"].items() if v is not None}
        new["exit_code_by_key"] = {**{k: old["exit_code_by_key"].get(k) for k in new["exit_code_by_key"]}, **fresh}
    RESULTS.mkdir(parents=True, exist_ok=True)
    kept.write_text(json.dumps(new))


def kill_rates() -> dict[str, dict[str, int]]:
    """Per module: how many mutants were killed, survived, untested and not run yet."""
    from mutmut.stats import status_by_exit_code

    rates = {}
    for name in MODULES:
        meta = RESULTS / f"{name}.json"
        if not meta.is_file():
            continue
        codes = json.loads(meta.read_text())["exit_code_by_key"].values()
        statuses = [status_by_exit_code[code] for code in codes]
        rates[name] = {"killed": sum(s in KILLED for s in statuses),
                       "survived": sum(s == "survived" for s in statuses),
                       "no tests": sum(s == "no tests" for s in statuses),
                       "not run": sum(s == "not checked" for s in statuses)}
    return rates


def survivors(name: str) -> list[str]:
    """The module's mutants no selected test killed (``mutmut show NAME`` prints the change)."""
    from mutmut.stats import status_by_exit_code

    meta = RESULTS / f"{name}.json"
    codes = json.loads(meta.read_text())["exit_code_by_key"] if meta.is_file() else {}
    return sorted(k for k, code in codes.items() if status_by_exit_code[code] in ("survived", "no tests"))


SQL = re.compile(r"\b(SELECT|UPDATE|INSERT|DELETE|WHERE|GROUP BY|ORDER BY|LIMIT|RETURNING|VALUES|SET|PRAGMA|ALTER TABLE|"
                 r"NULL)\b", re.I)


def sql_case_only(name: str) -> bool:
    """True when the mutant only changes the letter case of SQL text or of a column's name (a key
    of the values a row is updated with): SQLite reads keywords and names in any case, so no test
    can tell (an equivalent mutant)."""
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    from archive_restore.jobs.store import _ITEMS_SCHEMA, _JOBS_SCHEMA

    columns = re.compile(r'"(%s)"' % "|".join(sorted({*_ITEMS_SCHEMA, *_JOBS_SCHEMA})), re.I)

    path = next(p for p, _ in MODULES.values() if name.startswith(mutant_prefix(p)))
    try:
        diff = get_diff_for_mutant(name, path=path).splitlines()
    except Exception:  # the module changed since: not classified
        return False
    removed = [line[1:] for line in diff if line.startswith("-") and not line.startswith("---")]
    added = [line[1:] for line in diff if line.startswith("+") and not line.startswith("+++")]
    return len(removed) == len(added) > 0 and all(
        r != a and r.lower() == a.lower() and (SQL.search(r) or columns.search(a)) for r, a in zip(removed, added))


def report() -> None:
    for name, counts in kill_rates().items():
        tested = counts["killed"] + counts["survived"] + counts["no tests"]
        rate = f"{100 * counts['killed'] / tested:5.1f} % killed" if tested else "  not run"
        equivalent = sum(sql_case_only(m) for m in survivors(name))
        others = f"; {100 * counts['killed'] / (tested - equivalent):.1f} % without the {equivalent} that only " \
                 "change the letter case of SQL" if equivalent else ""
        print(f"{MODULES[name][0]:36s} {rate}  ({counts['killed']} of {tested}; {counts['survived']} survived, "
              f"{counts['no tests']} reached by no test, {counts['not run']} not run yet{others})")


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def main(argv: list[str]) -> int:
    os.chdir(ROOT)
    signal.signal(signal.SIGTERM, _interrupt)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if argv[:1] == ["--one"]:
        option = argv[2] if len(argv) > 2 else None
        seed = int(argv[3]) if len(argv) > 3 else 0
        run_one(argv[1], sample=int(option) if option and option.isdigit() else None, retry=option == "--retry",
                seed=seed)
        return 0
    extra = []
    if argv[:1] == ["--sample"]:
        extra, argv = argv[1:2], argv[2:]
        if argv[:1] == ["--seed"]:
            extra, argv = extra + argv[1:2], argv[2:]
    elif argv[:1] == ["--retry"]:
        extra, argv = argv[:1], argv[1:]
    if argv[:1] == ["--survivors"]:
        for name in argv[1:] or list(MODULES):
            print("\n".join(survivors(name)))
        return 0
    if argv[:1] != ["--report"]:
        for name in argv or list(MODULES):
            if name not in MODULES:
                print(f"unknown module {name!r}; choose from {', '.join(MODULES)}", file=sys.stderr)
                return 2
            try:
                subprocess.run([sys.executable, __file__, "--one", name, *extra], check=False)
            except KeyboardInterrupt:  # Ctrl-C or SIGTERM: keep what this module's run has found so far
                keep_results(name)
                report()
                return 1
            keep_results(name)
    report()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
