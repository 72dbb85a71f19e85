"""The highest reading grade a message may have unless `check-templates --max-grade` says
otherwise: health literacy guidance asks for patient text at about a US 8th-grade level.

A module of its own so the command line can show it as the option's default without loading the
template check (Jinja, textstat, Babel).
"""

DEFAULT_MAX_GRADE = 8.0
