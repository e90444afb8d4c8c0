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


def run_cli(main, argv: list[str] | None = None) -> None:
    """Run a script's `main(argv)`; bad input ends with `error: ...` on stderr and exit code 2."""
    import sys
    try:
        main(sys.argv[1:] if argv is None else argv)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
