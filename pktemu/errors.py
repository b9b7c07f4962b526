"""The one error type users see: a single line naming the file, the object and the field."""


class PktemuError(Exception):
    """Bad input (topology, rules, capture): the CLI prints the message and exits with status 2."""
