"""The command line's exit statuses (``slicer-compile --help`` and the README list them)."""

EXIT_OK = 0
#: The job failed: bad input, a missing file, an unreachable server (the message says why).
EXIT_FAILURE = 1
#: The command line itself is wrong.
EXIT_USAGE = 2
#: select/run: no split meets the constraints; an answer, not a failure, but scripts branch on it.
EXIT_INFEASIBLE = 3
EXIT_ABORTED = 130
