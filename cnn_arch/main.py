"""Command line: python -m cnn_arch.main --config=configs/X.py --workdir=DIR [--config.key=v]."""

from __future__ import annotations

import ast
import logging as std_logging
import os
import re
import sys
import threading

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow only feeds data here

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from cnn_arch import parallel, train  # noqa: E402
from cnn_arch.errors import UserError  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints and metrics.")
flags.mark_flags_as_required(["config", "workdir"])

# --config.model_kwargs.<option>=<value> for any model option, also those the config file
# does not declare (ml_collections only overrides declared keys); checked by validate.
_MODEL_OPTION = re.compile(r"--config\.model_kwargs\.(\w+)=(.*)")
_model_options: dict[str, object] = {}


class _OwnInfoOnly(std_logging.Filter):
    """INFO lines from cnn_arch only; libraries (Orbax, JAX) speak at WARNING and up,
    in one line each: the failure they report reaches the user as cnn_arch's own
    ``error:`` line, not as a library traceback."""

    def filter(self, record: std_logging.LogRecord) -> bool:
        if f"{os.sep}cnn_arch{os.sep}" in record.pathname:
            return True
        if record.levelno < std_logging.WARNING:
            return False
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        record.msg, record.args = " ".join(record.getMessage().split())[:300], None
        return True


def _thread_failure(args: threading.ExceptHookArgs) -> None:
    """A library's background thread (e.g. an Orbax save) failing: one warning line;
    the loop turns the failure itself into an ``error:`` line."""
    logging.warning(
        "background thread %s failed: %s: %s",
        args.thread.name if args.thread else "?",
        args.exc_type.__name__,
        " ".join(str(args.exc_value).split())[:300],
    )


def _is_closed_loop(exc: BaseException | None) -> bool:
    """After a failed async save, TensorStore's completion callbacks can fire into
    Orbax's event loop after it closed. Each reports 'Event loop is closed' (through
    sys.excepthook or, from TensorStore's own threads, sys.unraisablehook); it carries
    nothing the ``error:`` line does not."""
    return isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed"


def _quiet_closed_loop(exc_type, exc, tb) -> None:
    if not _is_closed_loop(exc):
        sys.__excepthook__(exc_type, exc, tb)


def _quiet_closed_loop_unraisable(unraisable) -> None:
    if not _is_closed_loop(unraisable.exc_value):
        sys.__unraisablehook__(unraisable)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    logging.get_absl_handler().addFilter(_OwnInfoOnly())
    threading.excepthook = _thread_failure
    sys.excepthook = _quiet_closed_loop
    sys.unraisablehook = _quiet_closed_loop_unraisable
    parallel.initialize_distributed()
    try:
        train.train_and_evaluate(_load_config(), _WORKDIR.value)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)


def _one_line(e: Exception) -> str:
    text = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
    typo = re.search(r'Did you mean \W*"([\w.]+)\W* instead of \W*"([\w.]+)', text)
    if typo:  # ml_collections' answer to an unknown --config.<key>
        return f"config has no key {typo.group(2)!r}; did you mean {typo.group(1)!r}?"
    bare_key = re.fullmatch(r"""["']*([\w.]+)["']*""", text.strip())
    if bare_key:
        return f"config has no key {bare_key.group(1)!r}"
    return " ".join(text.split()) or type(e).__name__


def _load_config():
    """The --config file, loaded; it is user code, so any failure is a user error."""
    try:
        config = _CONFIG.value
        config.keys()  # a file that failed to load raises only when first used
        with config.unlocked():  # config_flags locks the loaded config
            for key, value in _model_options.items():
                config.model_kwargs[key] = value
        return config
    except Exception as e:  # noqa: BLE001
        raise UserError(f"cannot load --config: {_one_line(e)}") from None


def _literal(text: str):
    """'3' -> 3, 'True' -> True, '(1, 2)' -> (1, 2); anything else stays a string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_flags(argv: list[str]) -> list[str]:
    """absl's parser, but a bad flag (unknown config key, wrong type, missing config
    file, no --workdir) is one 'error:' line and exit status 2, like every user error."""
    rest = []
    for arg in argv:
        match = _MODEL_OPTION.fullmatch(arg)
        if match:
            _model_options[match.group(1)] = _literal(match.group(2))
        else:
            rest.append(arg)
    sys.argv[:] = rest  # config_flags reads its overrides from sys.argv itself
    try:
        return flags.FLAGS(rest)
    except Exception as e:  # noqa: BLE001 - config files are user code: any failure is theirs
        print(f"error: {_one_line(e)}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
