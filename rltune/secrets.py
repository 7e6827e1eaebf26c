"""Values read from `${env:NAME}` placeholders are secrets: no message rltune prints or logs shows them.

`rltune.config.resolve_env` registers each value it substitutes. From then on every log record (rltune's
and the libraries'), every warning, every RLTuneError message and every uncaught traceback passes through
`redact`, which writes the placeholder back in place of the value, whichever field it came from.
"""

from __future__ import annotations

import logging
import sys
import threading
import traceback
import warnings

MIN_LENGTH = 4
"""Shorter values ('1', 'yes') are not treated as secrets: replacing them would garble ordinary text."""

_secrets: dict[str, str] = {}  # value -> its placeholder
_installed = False


def register(name: str, value: str) -> None:
    if len(value) >= MIN_LENGTH and value not in _secrets:
        _secrets[value] = f"${{env:{name}}}"
        _install()


def redact(text: str) -> str:
    for value in sorted(_secrets, key=len, reverse=True):  # a value inside a longer one goes last
        text = text.replace(value, _secrets[value])
    return text


def _install() -> None:
    """Hooks into logging, warnings and the uncaught-exception handlers, once per process."""
    global _installed
    if _installed:
        return
    _installed = True
    make_record = logging.getLogRecordFactory()

    def redacting_record(*args, **kwargs) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        message = record.getMessage()
        if redact(message) != message:
            record.msg, record.args = redact(message), None
        if record.exc_info and record.exc_info[0] is not None:
            record.exc_text = redact("".join(traceback.format_exception(*record.exc_info)).rstrip("\n"))
        return record

    logging.setLogRecordFactory(redacting_record)
    show_warning = warnings.showwarning

    def redacting_warning(message, category, filename, lineno, file=None, line=None) -> None:
        show_warning(redact(str(message)), category, filename, lineno, file, line)

    warnings.showwarning = redacting_warning

    def redacting_excepthook(kind, exc, tb) -> None:
        sys.stderr.write(redact("".join(traceback.format_exception(kind, exc, tb))))

    sys.excepthook = redacting_excepthook

    def redacting_thread_hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is not SystemExit:
            sys.stderr.write(f"Exception in thread {getattr(args.thread, 'name', '?')}:\n")
            redacting_excepthook(args.exc_type, args.exc_value, args.exc_traceback)

    threading.excepthook = redacting_thread_hook
