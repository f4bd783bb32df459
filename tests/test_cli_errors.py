"""Bad command lines: a clear message that names the option and its value, a non-zero exit
status, no traceback, and nothing run before the command line is found wrong."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import bce_bench.cli
import bce_conformance.cli
from bce_core.cli import input_problem, main, output_problem


class Ran(BaseException):
    """Raised by the stand-ins of the suite and the bench: not an Exception, so no handler
    of the command line can turn it into an error message."""


@pytest.fixture
def nothing_runs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The suite, the isolated suite and the bench, replaced by stand-ins that record a call."""
    calls: list[str] = []

    def stand_in(name: str) -> Any:
        def run(*args: object, **kwargs: object) -> None:
            calls.append(name)
            raise Ran(name)

        return run

    monkeypatch.setattr(bce_conformance.cli, "run_suite", stand_in("run_suite"))
    monkeypatch.setattr(bce_conformance.cli, "_run_isolated", stand_in("_run_isolated"))
    monkeypatch.setattr(bce_bench.cli, "run_bench", stand_in("run_bench"))
    return calls


@pytest.fixture
def places(tmp_path: Path) -> dict[str, str]:
    """Paths for the command lines below: a folder, a file, and a folder that is missing."""
    folder = tmp_path / "folder"
    folder.mkdir()
    existing = tmp_path / "file.txt"
    existing.write_text("a file\n")
    return {"tmp": str(tmp_path), "dir": str(folder), "file": str(existing)}


def exit_status(argv: list[str]) -> int:
    """``main``'s exit status, whether it returns it or argparse exits with it."""
    try:
        return main(argv)
    except SystemExit as exited:
        return exited.code if isinstance(exited.code, int) else 1


MISSING = "/nonexistent/dir"

# (command line, expected exit status, text the error names); {dir}, {file}, {tmp} are paths.
BAD_COMMAND_LINES: list[tuple[list[str], int, list[str]]] = [
    # bce
    ([], 2, ["required: COMMAND"]),
    (["nosuch"], 2, ["invalid choice: 'nosuch'"]),
    ([""], 2, ["invalid choice: ''"]),
    (["--nosuch"], 2, ["required: COMMAND"]),  # argparse wants the command first
    # bce backends
    (["backends", "--nosuch"], 2, ["unrecognized arguments: --nosuch"]),
    (["backends", "extra"], 2, ["unrecognized arguments: extra"]),
    (["backends", "--json=yes"], 2, ["--json", "yes"]),
    # bce conformance
    (["conformance", "--nosuch"], 2, ["unrecognized arguments: --nosuch"]),
    (["conformance", "--jobs", "0"], 2, ["argument --jobs", "'0'"]),
    (["conformance", "--jobs", "-1"], 2, ["argument --jobs", "'-1'"]),
    (["conformance", "--jobs", "x"], 2, ["argument --jobs", "'x'"]),
    (["conformance", "--jobs", ""], 2, ["argument --jobs", "''"]),
    (["conformance", "--dtype", "float8"], 2, ["argument --dtype", "'float8'"]),
    (["conformance", "--dtype", ""], 2, ["argument --dtype", "''"]),
    (["conformance", "--device", "tpu"], 2, ["argument --device", "'tpu'"]),
    (["conformance", "--backend", "nosuch"], 2, ["no backend named 'nosuch'"]),
    (["conformance", "--backend", "numpy", "--backend", "nupmy"], 2, ["'nupmy'", "'numpy'?"]),
    (["conformance", "--backend", ""], 2, ["no backend named ''"]),
    (["conformance", "--isolate", "--backend", "nosuch"], 2, ["no backend named 'nosuch'"]),
    (["conformance", "--jobs", "2", "--backend", "nosuch"], 2, ["no backend named 'nosuch'"]),
    (
        ["conformance", "--json", f"{MISSING}/x.json"],
        2,
        ["argument --json", f"'{MISSING}/x.json'", f"directory {MISSING!r} does not exist"],
    ),
    (["conformance", "--json", "{dir}"], 2, ["argument --json", "'{dir}'", "is a directory"]),
    (["conformance", "--json", "{dir}/"], 2, ["argument --json", "'{dir}/'", "is a directory"]),
    (["conformance", "--json", ""], 2, ["argument --json", "''", "empty"]),
    (
        ["conformance", "--html", f"{MISSING}/x.html"],
        2,
        ["argument --html", f"'{MISSING}/x.html'", "does not exist"],
    ),
    (
        ["conformance", "--html", "{file}/x.html"],
        2,
        ["argument --html", "'{file}/x.html'", "'{file}' is not a directory"],
    ),
    (
        ["conformance", "--json", "{tmp}/same", "--html", "{tmp}/same"],
        2,
        ["--json '{tmp}/same' and --html '{tmp}/same' name the same file"],
    ),
    # bce bench
    (["bench", "--nosuch"], 2, ["unrecognized arguments: --nosuch"]),
    (["bench", "--sizes", "abc"], 2, ["argument --sizes", "'abc'"]),
    (["bench", "--sizes", "0"], 2, ["argument --sizes", "'0'"]),
    (["bench", "--sizes", "-5"], 2, ["argument --sizes", "'-5'"]),
    (["bench", "--sizes", ""], 2, ["argument --sizes", "no size given"]),
    (["bench", "--sizes", "1.5"], 2, ["argument --sizes", "'1.5'"]),
    (["bench", "--sizes", "1e400"], 2, ["argument --sizes", "'1e400'"]),
    (["bench", "--sizes", "nan"], 2, ["argument --sizes", "'nan'"]),
    (["bench", "--repeat", "0"], 2, ["argument --repeat", "'0'"]),
    (["bench", "--repeat", "x"], 2, ["argument --repeat", "'x'"]),
    (["bench", "--dtype", "float8"], 2, ["argument --dtype", "'float8'"]),
    (["bench", "--dtype", ","], 2, ["argument --dtype", "no dtype given"]),
    (["bench", "--backend", "nosuch"], 2, ["no backend named 'nosuch'"]),
    (["bench", "--backend", "numpy,nosuch"], 2, ["no backend named 'nosuch'"]),
    (["bench", "--backend", ""], 2, ["argument --backend", "empty backend name"]),
    (["bench", "--plot", "bench.pdf"], 2, ["argument --plot", "'bench.pdf'"]),
    (["bench", "--plot", f"{MISSING}/b.svg"], 2, ["argument --plot", "does not exist"]),
    (["bench", "--plot", "{dir}/"], 2, ["argument --plot", "'{dir}/'"]),
    (["bench", "--json", f"{MISSING}/b.json"], 2, ["argument --json", "does not exist"]),
    (["bench", "--json", "{dir}"], 2, ["argument --json", "'{dir}'", "is a directory"]),
    (["bench", "--from-json", "{tmp}/saved.json"], 2, ["argument --from-json", "does not exist"]),
    (["bench", "--from-json", "{dir}"], 2, ["argument --from-json", "is a directory"]),
    (["bench", "--from-json", ""], 2, ["argument --from-json", "''", "empty"]),
    (
        ["bench", "--write-readme", "--readme", f"{MISSING}/README.md"],
        2,
        ["--readme", f"'{MISSING}/README.md'", "does not exist"],
    ),
    (["bench", "--write-readme", "--readme", "{dir}"], 2, ["--readme", "is a directory"]),
    (["bench", "--write-readme", "--readme", "{file}"], 1, ["{file}", "markers"]),
]


@pytest.mark.parametrize(
    ("argv", "status", "names"),
    BAD_COMMAND_LINES,
    ids=[" ".join(argv) or "(nothing)" for argv, _, _ in BAD_COMMAND_LINES],
)
def test_bad_command_line_is_rejected_before_any_work(
    argv: list[str],
    status: int,
    names: list[str],
    places: dict[str, str],
    nothing_runs: list[str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = [arg.format(**places) for arg in argv]
    assert exit_status(argv) == status
    err = capsys.readouterr().err
    assert "Traceback" not in err
    # One line says what is wrong (after argparse's usage, when argparse found it).
    (message,) = [line for line in err.splitlines() if ": error: " in line]
    for name in names:
        assert name.format(**places) in message
    assert nothing_runs == []


def test_the_reported_command_lines_fail_at_once_without_a_traceback(tmp_path: Path) -> None:
    """Through the console script's module, as a user runs it: the whole suite would take
    minutes, the error comes at once."""
    for option, path in (
        ("--json", "/nonexistent/dir/x.json"),
        ("--json", str(tmp_path)),
        ("--html", "/nonexistent/dir/x.html"),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "bce_core", "conformance", option, path],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stderr
        assert f"bce conformance: error: argument {option}: {path!r}" in done.stderr
        assert done.stdout == ""  # no progress, no table: the suite never started


def test_missing_directory_message_says_what_to_do() -> None:
    assert output_problem("/nonexistent/dir/x.json") == (
        "directory '/nonexistent/dir' does not exist; create it or choose another path"
    )
    assert output_problem("report.json") is None  # the current directory
    assert input_problem("/nonexistent/x.json") == (
        "'/nonexistent/x.json' does not exist; give the path of an existing file"
    )


def test_unwritable_directory_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, nothing_runs: list[str]
) -> None:
    # Root may write anywhere, so the directory's permission is simulated.
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access

    def access(path: Any, mode: int, **kwargs: Any) -> bool:
        if Path(path) == locked and mode & os.W_OK:
            return False
        return real_access(path, mode, **kwargs)

    monkeypatch.setattr(os, "access", access)
    assert output_problem(str(locked / "x.json")) == (
        f"directory {str(locked)!r} is not writable; choose another path"
    )
    assert exit_status(["conformance", "--json", str(locked / "x.json")]) == 2
    assert exit_status(["bench", "--plot", str(locked / "b.svg")]) == 2
    assert nothing_runs == []


def test_read_only_file_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "x.json"
    target.write_text("{}")
    real_access = os.access
    monkeypatch.setattr(
        os,
        "access",
        lambda path, mode, **kw: False if Path(path) == target else real_access(path, mode, **kw),
    )
    assert output_problem(str(target)) == f"{str(target)!r} is not writable; choose another path"


def test_html_without_matplotlib_fails_before_the_suite_runs(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    nothing_runs: list[str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises
    page = tmp_path / "report.html"
    assert main(["conformance", "--backend", "numpy", "--html", str(page)]) == 1
    err = capsys.readouterr().err
    assert "bce conformance: error: --html needs matplotlib (pip install 'bce-core[report]')" in err
    assert nothing_runs == [] and not page.exists()


def test_plot_without_matplotlib_fails_before_the_bench_runs(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    nothing_runs: list[str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    picture = tmp_path / "bench.svg"
    assert main(["bench", "--backend", "numpy", "--plot", str(picture)]) == 1
    err = capsys.readouterr().err
    assert "bce bench: error: --plot needs matplotlib (pip install 'bce-core[report]')" in err
    assert nothing_runs == [] and not picture.exists()


def test_json_without_matplotlib_still_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, nothing_runs: list[str]
) -> None:
    """Only the options that draw need matplotlib."""
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(Ran):
        main(["conformance", "--backend", "numpy", "--json", str(tmp_path / "r.json")])
    assert nothing_runs == ["run_suite"]


SAVED_RUNS_THAT_ARE_NOT_RUNS: list[bytes] = [
    b"{not json",
    b"",
    b"\xff\xfe\x00garbage",
    b"[]",
    b"null",
    b"3",
    b"{}",
    b'{"command": "bce bench", "machine": [], "config": {}}',
    b'{"command": "bce bench", "machine": {}, "config": {}, "backends": 3}',
    b'{"command": "bce bench", "machine": {}, "config": {}, "backends": [1]}',
    b'{"command": "bce bench", "machine": {}, "config": {}, "backends": [{"name": "numpy"}]}',
    b'{"command": 1, "machine": {}, "config": {}, "backends": [], "skipped": [{"x": 1}]}',
]


@pytest.mark.parametrize("content", SAVED_RUNS_THAT_ARE_NOT_RUNS)
def test_from_json_of_something_else_names_the_file(
    content: bytes, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    saved = tmp_path / "saved.json"
    saved.write_bytes(content)
    assert exit_status(["bench", "--from-json", str(saved)]) == 1
    err = capsys.readouterr().err
    assert f"bce bench: error: cannot read {saved}" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_an_unexpected_error_is_one_line_unless_asked_for(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(bce_conformance.cli, "run_suite", broken)
    monkeypatch.delenv("BCE_TRACEBACK", raising=False)
    assert main(["conformance", "--backend", "numpy"]) == 1
    err = capsys.readouterr().err
    assert "bce conformance: internal error: ZeroDivisionError: division by zero" in err
    assert "BCE_TRACEBACK=1" in err and "Traceback" not in err
    monkeypatch.setenv("BCE_TRACEBACK", "1")
    with pytest.raises(ZeroDivisionError):
        main(["conformance", "--backend", "numpy"])


def test_write_that_fails_at_the_end_is_an_error_not_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The directory checked before the run can disappear during it (or the disk fill up)."""

    def full(report: object, path: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(bce_conformance.cli, "write_json", full)
    out = tmp_path / "report.json"
    assert (
        main(["conformance", "--backend", "numpy", "--dtype", "float64", "--json", str(out)]) == 1
    )
    err = capsys.readouterr().err
    assert f"bce conformance: error: cannot write {out}: No space left on device" in err
