"""find_photos: recursive, sorted, case-insensitive, loop-safe; output folder placement."""
import os
from pathlib import Path

import pytest

from archive_restore.errors import InputError, UsageError
from archive_restore.media.walk import (
    Skipped,
    check_output_dir,
    default_output_dir,
    find_photos,
    is_image_name,
)


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


@pytest.fixture
def collection(tmp_path: Path) -> Path:
    root = tmp_path / "scans"
    for name in ["b.png", "a.JPG", "sub/c.TiFf", "sub/deep/d.webp", "sub/e.jpeg", "z.Bmp", "y.tif",
                 "notes.txt", "sub/README", ".hidden.jpg", ".cache/f.jpg", "sub/.thumbs/g.png"]:
        _touch(root / name)
    os.symlink(root, root / "sub" / "loop")  # a folder link back to an ancestor
    outside = tmp_path / "elsewhere"
    _touch(outside / "h.png")
    os.symlink(outside, root / "linked")  # a folder link elsewhere is followed
    return root


def test_finds_photos_sorted_recursive_case_insensitive(collection: Path) -> None:
    found = [rel.as_posix() for _, rel in find_photos(collection)]
    assert found == ["a.JPG", "b.png", "linked/h.png", "sub/c.TiFf", "sub/deep/d.webp", "sub/e.jpeg",
                     "y.tif", "z.Bmp"]


def test_paths_join_root_and_relpath(collection: Path) -> None:
    for path, rel in find_photos(collection):
        assert path == collection / rel
        assert path.is_file()


def test_skipped_entries_have_reasons_and_hidden_are_silent(collection: Path) -> None:
    skipped: list[Skipped] = []
    list(find_photos(collection, skipped))
    reasons = {entry.path.relative_to(collection).as_posix(): entry.reason for entry in skipped}
    assert reasons == {
        "notes.txt": "not an image extension",
        "sub/README": "not an image extension",
        "sub/loop": "symlink loop",
    }


def test_walk_is_deterministic(collection: Path) -> None:
    assert list(find_photos(collection)) == list(find_photos(collection))


def test_broken_symlink_is_reported(tmp_path: Path) -> None:
    os.symlink(tmp_path / "gone.jpg", tmp_path / "dangling.jpg")
    skipped: list[Skipped] = []
    assert list(find_photos(tmp_path, skipped)) == []
    assert [entry.reason for entry in skipped] == ["broken symlink"]


def test_single_photo_root(tmp_path: Path) -> None:
    photo = _touch(tmp_path / "one.JPEG")
    assert list(find_photos(photo)) == [(photo, Path("one.JPEG"))]


def test_missing_or_non_photo_root_raises(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file or folder"):
        list(find_photos(tmp_path / "absent"))
    with pytest.raises(InputError, match="not an image extension"):
        list(find_photos(_touch(tmp_path / "notes.txt")))


def test_is_image_name() -> None:
    assert is_image_name("x.WebP") and is_image_name("dir.d/x.tiff")
    assert not is_image_name("x.gif") and not is_image_name("jpg")


def test_default_output_dir_is_beside_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "scans"
    root.mkdir()
    assert default_output_dir(root) == tmp_path / "scans_restored"
    monkeypatch.chdir(root)
    assert default_output_dir(".") == tmp_path / "scans_restored"
    assert default_output_dir(_touch(root / "photo.jpg")) == root / "photo_restored"


def test_output_dir_inside_input_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "scans"
    (root / "sub").mkdir(parents=True)
    for bad in (root, root / "restored", root / "sub" / "deeper"):
        with pytest.raises(UsageError, match="inside the input"):
            check_output_dir(root, bad)
    os.symlink(root / "sub", tmp_path / "sneaky")
    with pytest.raises(UsageError):
        check_output_dir(root, tmp_path / "sneaky" / "out")
    check_output_dir(root, default_output_dir(root))
    check_output_dir(root, tmp_path / "scans2")  # a name prefix is not containment
