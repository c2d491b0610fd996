"""The one error the admin CLI reports: its message is the single line an administrator sees."""


class AdminError(Exception):
    """A failure the CLI explains in one line on stderr and answers with exit code 1."""
