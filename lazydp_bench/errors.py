"""The one exception type the CLI turns into a one-line message and exit code 2."""


class BenchError(Exception):
    """A user-facing error: bad input or a request the machine cannot satisfy.

    Raised before anything is allocated or written, so the CLI can report it in one
    line without a traceback and leave the disk untouched.
    """


class DoesNotFit(BenchError):
    """The run's memory estimate exceeds what the chosen placement has (a sweep skips it)."""

    def __init__(self, message: str, placement: str, gpu_bytes: int, host_bytes: int) -> None:
        super().__init__(message)
        self.placement = placement
        self.gpu_bytes = gpu_bytes
        self.host_bytes = host_bytes
