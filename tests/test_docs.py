"""The documents a user and a maintainer read agree with the code: the command reference is the CLI's own
``--help``, the README stays a short manual whose commands exist as written and whose links lead somewhere."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import click

from archive_restore.cli import cli
from archive_restore.cli.reference import REFERENCE, reference

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
README_BYTES = 15 * 1024


def test_the_command_reference_is_the_clis_help():
    assert REFERENCE.read_text() == reference(), "docs/commands.md is out of date: run `make docs`"


def test_the_reference_shows_every_option_of_every_command():
    text = reference()
    for name, command in cli.commands.items():
        subs = command.commands.values() if isinstance(command, click.Group) else [command]
        for sub in subs:
            for param in sub.params:
                for opt in getattr(param, "opts", []):
                    if opt.startswith("--"):
                        assert opt in text, f"{name} {sub.name}: {opt} missing from the reference"


def test_the_readme_is_short():
    assert len(README.read_bytes()) <= README_BYTES


def _readme_commands() -> list[list[str]]:
    """Each ``archive-restore ...`` line of the README's shell blocks, as words (continuations joined)."""
    blocks = re.findall(r"```(?:sh|shell|bash|console)\n(.*?)```", README.read_text(), re.S)
    commands = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip().removeprefix("$ ")
            if line.startswith("archive-restore "):
                commands.append(shlex.split(line.split(" #")[0]))
    return commands


def test_every_readme_command_and_option_exists():
    commands = _readme_commands()
    assert len(commands) >= 8, "the README's everyday commands are in ```sh blocks"
    for words in commands:
        command: click.Command = cli
        rest = words[1:]
        while isinstance(command, click.Group) and rest and not rest[0].startswith("-"):
            assert rest[0] in command.commands, f"README: no command {rest[0]!r} in {' '.join(words)}"
            command, rest = command.commands[rest[0]], rest[1:]
        known = {opt for p in command.params for opt in getattr(p, "opts", []) + getattr(p, "secondary_opts", [])}
        known |= {"--help"}
        for word in rest:
            if word.startswith("-"):
                assert word.split("=")[0] in known, f"README: {word} is not an option of: {' '.join(words)}"


def test_readme_and_docs_links_lead_to_files():
    for page in [README, ROOT / "ARCHITECTURE.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" in target or target.startswith("mailto:"):
                continue
            assert (page.parent / target).exists(), f"{page.name} links to {target}, which does not exist"
