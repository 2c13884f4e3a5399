"""The one exception type panda raises for bad input.

Every message says what was wrong *and* how to fix it, so the CLI can print it as is
and exit non-zero.
"""


class PandaError(Exception):
    """Bad input or state that the user can fix; the message names the fix."""
