"""`python -m reminder_service` runs the command line."""

from .cli import main

main()
