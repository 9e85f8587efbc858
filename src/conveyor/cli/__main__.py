"""``python -m conveyor.cli`` runs the CLI, like ``python -m conveyor``."""

from conveyor.cli import main

main()
