"""User-facing errors: main prints each as one sentence and exits with ``exit_code``."""


class UserError(Exception):
    """A problem the user can fix (config, data, workdir); never a bug in cnn_arch."""

    exit_code = 2


class DataError(UserError):
    """The dataset's files cannot be read (truncated or corrupted shard, missing file);
    raised by ``cnn_arch.data.faults``, defined here so that catching it loads no
    TensorFlow."""

    exit_code = 5


class Diverged(UserError):
    """The loss or gradient norm became inf/nan; training stopped before saving it."""

    exit_code = 3


class Preempted(UserError):
    """SIGTERM/SIGINT arrived; a checkpoint of the current step was committed."""

    exit_code = 4


class EvalFailed(UserError):
    """An evaluator failed; the training progress was committed first."""

    exit_code = 7
