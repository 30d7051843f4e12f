"""The one exception type the CLI turns into a one-line message and exit code 2."""


class BenchError(Exception):
    """A user-facing error: bad input or a request the machine cannot satisfy.

    Raised before anything is allocated or written, so the CLI can report it in one
    line without a traceback and leave the disk untouched.
    """
