"""Framework start-up logs kept out of the ``bce`` command's own output.

Importing TensorFlow prints C++ log lines to the process's standard error
before its logging is configured ("All log messages before
absl::InitializeLog() is called are written to STDERR", "Could not find cuda
drivers", and at the first operation "failed call to cuInit", which reads like
an error on a machine without a GPU). ``TF_CPP_MIN_LOG_LEVEL`` silences only
the later ones, so the command also reads the file descriptor 2 while the
framework's top-level module runs and writes back every line that is not such
a start-up record. Library code never calls this: it is for the command line's
own process, where these lines would bury the report.

>>> is_startup_record("I0000 00:00:1796339007.277378    1113 cudart_stub.cc:31] Could not find")
True
>>> is_startup_record("ValueError: logits must be floating")
False
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import ModuleType

#: Top-level modules whose import writes C++ start-up records to standard error.
NOISY_MODULES = frozenset({"tensorflow"})

#: TensorFlow's own switch for its later C++ logs; the user's value is kept when set.
LOG_LEVEL_VARIABLE = "TF_CPP_MIN_LOG_LEVEL"

_RECORD = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|[IW]\d{4} [\d:. ]+\d+ [\w./-]+:\d+\] )"
)

# fd 2 is one per process: one redirect at a time.
_redirect_lock = threading.Lock()


def is_startup_record(line: str) -> bool:
    """Whether ``line`` is an informational or warning record of a framework's C++ logging."""
    return _RECORD.match(line) is not None


@contextmanager
def startup_records_dropped() -> Iterator[None]:
    """Run the body with fd 2 read into a file; write back what is not a start-up record."""
    with _redirect_lock, tempfile.TemporaryFile(mode="w+b") as capture:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = [
                line
                for line in capture.read().decode(errors="replace").splitlines(keepends=True)
                if not is_startup_record(line)
            ]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


class _QuietLoader(importlib.abc.Loader):
    """Runs a noisy module's loader with its start-up records dropped."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self._loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        with startup_records_dropped():
            self._loader.exec_module(module)


class _QuietFinder(importlib.abc.MetaPathFinder):
    """Finds the noisy top-level modules through the other finders and wraps their loader."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in NOISY_MODULES:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _QuietLoader(spec.loader)
                return spec
        return None


def quiet_framework_logs() -> None:
    """Keep the frameworks' start-up logs out of this process's standard error (idempotent).

    Called first by the command-line entry points; ``tests/test_quiet_logs.py`` runs it in
    a fresh interpreter that then imports TensorFlow.
    """
    os.environ.setdefault(LOG_LEVEL_VARIABLE, "3")
    if not any(isinstance(finder, _QuietFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _QuietFinder())
