"""The one exception type the CLI turns into a one-line message."""


class UserError(Exception):
    """Bad input or environment: printed as one line by the CLI, exit code 2.

    The message must say what is wrong and how to fix it.
    """
