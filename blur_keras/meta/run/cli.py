"""How the command-line entry points (``train/``) report what a user's configuration or data
caused: one line, ``<prefix>: <ErrorType>: <message>``; ``--verbosity=1`` keeps the traceback.
Any other exception is a bug and keeps its traceback."""

import contextlib
import re
import tokenize

from absl import logging

__all__ = ["USER_ERRORS", "one_line", "one_line_errors"]

# gin reports a malformed file or binding as SyntaxError (or tokenize.TokenError for an
# unclosed bracket); a bad value as ValueError / TypeError; a missing file as OSError
USER_ERRORS = (ValueError, TypeError, OSError, KeyError, RuntimeError, SyntaxError,
               tokenize.TokenError)


def one_line(err):
    """``err``'s message on one line (a ``TokenError``'s without its position tuple)."""
    text = err.args[0] if isinstance(err, tokenize.TokenError) and err.args else str(err)
    if isinstance(err, SyntaxError) and err.lineno and "line" not in str(text):
        text = f"{text} (line {err.lineno})"
    text = re.sub(r" \(<function [^>]*>\)", "", str(text))  # gin's note names the function
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


@contextlib.contextmanager
def one_line_errors(prefix, verbose=None):
    """Turn a ``USER_ERRORS`` exception into ``SystemExit`` with one line (``prefix`` first),
    unless ``verbose`` (default: absl's verbosity is 1 or more)."""
    try:
        yield
    except USER_ERRORS as err:
        if logging.level_debug() if verbose is None else verbose:
            raise
        kind = "SyntaxError" if isinstance(err, tokenize.TokenError) else type(err).__name__
        raise SystemExit(f"{prefix}: {kind}: {one_line(err)} "
                         "(run with --verbosity=1 for the traceback)") from None
