"""``python -m archive_restore`` runs the command line, as ``archive-restore`` does."""
from .cli import main

main()
