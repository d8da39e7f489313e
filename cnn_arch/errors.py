"""User-facing errors: caught in main and printed as one sentence (exit status 2)."""


class UserError(Exception):
    """A problem the user can fix (config, data, workdir); never a bug in cnn_arch."""
