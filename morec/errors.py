"""The one exception type for bad input: its message names the file (and line) and the fix.

Scripts catch it at the top, print ``error: <message>`` on stderr and exit with code 2, without a
traceback. Anything else that goes wrong is a bug and keeps its traceback.
"""


class InputError(Exception):
    """Bad data, bad parameters or a missing file: a user can fix it by reading the message."""


class Preempted(Exception):
    """A stop signal (SIGTERM from a cluster scheduler, SIGINT) ended a run after it saved a
    checkpoint; the same command with --resume continues it."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum
