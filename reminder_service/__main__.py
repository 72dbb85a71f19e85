"""`python -m reminder_service` runs the command line."""

from .entrypoints.cli import main

main()
