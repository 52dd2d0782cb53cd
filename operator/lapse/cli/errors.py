"""Exit codes and the one error type of `kubectl lapse`.

Scripts and CI jobs branch on the exit code, so each outcome a caller may want to tell apart has
its own number, and every failure reaches the user as one sentence instead of a traceback.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    # The API refused or failed: not found, forbidden, an admission webhook said no, no server.
    API_ERROR = 1
    # argparse's own code for a command line it cannot accept.
    USAGE = 2
    # Lapse decided against the grant: Denied, Invalid, or Revoked before it could be used.
    REFUSED = 3
    TIMEOUT = 4
    # A command across clusters (--contexts, --all-contexts): some did not answer in time; the
    # answers of the others were shown.
    UNREACHABLE = 5
    INTERRUPTED = 130


EXIT_CODES_HELP = """\
exit codes:
  0  done: the access is Active (or Pending, waiting for approvers, or not waited for)
  1  the Kubernetes API refused or failed (not found, forbidden, admission webhook, no server)
  2  the command line is wrong (unknown flag, bad duration, missing --reason)
  3  Lapse denied the request, found it Invalid, or it was revoked
  4  timed out waiting for Lapse to decide (the object stays; see `kubectl lapse explain`)
  5  across clusters (--contexts, --all-contexts): a cluster did not answer; the others' answers
     are shown"""


class CliError(Exception):
    """A failure to report as `error: <message>` with its exit code."""

    def __init__(self, message: str, code: ExitCode = ExitCode.API_ERROR) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class NotFound(CliError):
    """The named object does not exist (or is not where the user looked)."""


class AlreadyExists(CliError):
    """An object of that name exists already."""
