"""Exceptions that the command line maps to exit statuses.

`InputError` is bad input from the user (a scenario, a dataset file, an
argument): the CLI prints its message and exits with status 2, no traceback.
Everything else is a bug or an environment failure: exit status 1.
"""


class InputError(Exception):
    """Bad user input. The message must name the file, the key path or the
    argument, the bad value, and what was expected."""


class DataError(InputError):
    """A dataset file is missing, truncated, corrupt or fails its checksum."""
