"""Finding the photos of a collection: a deterministic, recursive walk that says what it skipped.

`find_photos(root)` yields `(path, relpath)` for every photo under `root`, sorted by relative path.
Entries that are not photos are recorded in an optional `skipped` list with a reason, so the caller
can report them; hidden files and folders (names starting with '.') are left out silently.
Folder symlinks are followed, but a link back into one of its own ancestors is a loop and skipped.

`file_stamp` and `content_sha256` say whether a photo is still the file a job read: the job compares
size and mtime on every run (a stat, already paid by the walk) and hashes the content only when they
differ or are unknown, so a rerun over a large unchanged folder reads no photo.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError, UsageError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp"})

OUTPUT_SUFFIX = "_restored"
_HASH_BLOCK = 1 << 20


@dataclass(frozen=True)
class Skipped:
    """An entry under the root that is not processed, and why."""

    path: Path
    reason: str


def is_image_name(path: str | os.PathLike[str]) -> bool:
    """True when the file name has one of the supported photo extensions (any letter case)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def find_photos(
    root: str | os.PathLike[str], skipped: list[Skipped] | None = None
) -> Iterator[tuple[Path, Path]]:
    """Yield `(path, relpath)` for each photo under `root`, sorted by relative path.

    `root` may also be a single photo, which is then yielded with its file name as relpath.
    Non-photo entries are appended to `skipped` (when given) with a reason; hidden names are not.
    Raises InputError when `root` does not exist or is a file that is not a photo.
    """
    root = Path(root)
    record = skipped.append if skipped is not None else (lambda _entry: None)
    if root.is_file():
        if not is_image_name(root):
            raise InputError(f"{root}: not an image extension (expected one of {_extension_list()})")
        yield root, Path(root.name)
        return
    if not root.is_dir():
        raise InputError(f"{root}: no such file or folder")
    yield from _walk_dir(root, Path(), ancestors=frozenset({_dir_key(root)}), record=record)


def _walk_dir(directory: Path, rel: Path, ancestors: frozenset, record) -> Iterator[tuple[Path, Path]]:
    """Depth-first walk of one folder in name order; `ancestors` holds the folders above it."""
    try:
        entries = sorted(os.scandir(directory), key=lambda entry: entry.name)
    except OSError as exc:
        record(Skipped(directory, f"cannot read folder ({exc.strerror or exc})"))
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue
        path, entry_rel = Path(entry.path), rel / entry.name
        if _is_dir(entry):
            key = _dir_key(path)
            if key in ancestors:
                record(Skipped(path, "symlink loop"))
                continue
            yield from _walk_dir(path, entry_rel, ancestors | {key}, record)
        elif _is_file(entry):
            if is_image_name(entry.name):
                yield path, entry_rel
            else:
                record(Skipped(path, "not an image extension"))
        elif entry.is_symlink() and not path.exists():
            record(Skipped(path, "broken symlink"))
        else:
            record(Skipped(path, "not a regular file"))


def _is_dir(entry: os.DirEntry) -> bool:
    """Folder test that follows symlinks and treats unreadable entries as not-a-folder."""
    try:
        return entry.is_dir(follow_symlinks=True)
    except OSError:
        return False


def _is_file(entry: os.DirEntry) -> bool:
    """Regular-file test that follows symlinks and treats unreadable entries as not-a-file."""
    try:
        return entry.is_file(follow_symlinks=True)
    except OSError:
        return False


def _dir_key(path: Path) -> tuple[int, int]:
    """Identity of a folder independent of the path (or symlink) used to reach it."""
    info = path.stat()
    return info.st_dev, info.st_ino


@dataclass(frozen=True)
class FileStamp:
    """A file's size in bytes and modification time in seconds."""

    size: int
    mtime: float


def file_stamp(path: str | os.PathLike[str]) -> FileStamp | None:
    """The file's size and mtime, or None when it cannot be stat'ed (gone, unreadable folder)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return FileStamp(st.st_size, st.st_mtime)


def content_sha256(path: str | os.PathLike[str]) -> str:
    """The sha256 of the file's bytes (hex), read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def _extension_list() -> str:
    """The supported extensions, for messages."""
    return ", ".join(sorted(IMAGE_EXTENSIONS))


def default_output_dir(root: str | os.PathLike[str]) -> Path:
    """`<root>_restored` beside `root` (for a single photo: `<stem>_restored` beside it)."""
    root = Path(os.path.abspath(root))
    name = root.stem if root.is_file() else root.name
    return root.with_name(name + OUTPUT_SUFFIX)


def check_output_dir(root: str | os.PathLike[str], output: str | os.PathLike[str]) -> None:
    """Raise UsageError when `output` is the input folder or lies inside it (symlinks resolved).

    Writing results into the collection being walked would feed them back in as inputs on the next
    run, and risks replacing originals. For a single photo, `output` is the folder its result goes
    in, so the photo's own folder is refused too: the result would replace the original.
    """
    root_real = Path(root).resolve()
    output_real = Path(output).resolve()
    inside = root_real.is_dir() and root_real in output_real.parents
    if output_real == root_real or inside:
        raise UsageError(
            f"output folder {output} is inside the input {root}; "
            f"choose a folder outside it (default: {default_output_dir(root)})"
        )
    if root_real.is_file() and output_real == root_real.parent:
        raise UsageError(
            f"output folder {output} holds the input {root}, whose result would replace it; "
            f"choose another folder (default: {default_output_dir(root)})"
        )
