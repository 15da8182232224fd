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


#: Longest quoted value in an error message (characters): a message never
#: prints an unbounded expansion of what the user wrote.
QUOTE_LIMIT = 80


def quote(value: object, limit: int = QUOTE_LIMIT) -> str:
    """``repr(value)``, cut to ``limit`` characters with the full length noted,
    for quoting user input in error messages."""
    text = repr(value)
    if len(text) <= limit:
        return text
    return f"{text[: limit - 1]}… ({len(text)} characters)"
