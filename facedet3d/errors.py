"""The one exception type for mistakes a user can fix (bad input, missing files).

The CLI prints its message on one line and exits 2; anything else is a bug and
keeps its traceback.
"""


class UserError(RuntimeError):
    """A problem with the user's input or setup; the message says what to do."""
