"""``bce bench``: the command end to end on tiny sizes, its JSON, its errors and its skips.

No test asserts how fast anything is: only that every timing is there, positive and
finite, and that medians, throughputs and ratios are computed from the samples.
"""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bce_bench.options import parse_sizes
from bce_bench.timing import interleaved
from bce_core.cli import main

TINY = ["--sizes", "100", "--repeat", "2"]


def bench(tmp_path: Path, *args: str) -> dict[str, Any]:
    out = tmp_path / "bench.json"
    assert main(["bench", *args, "--json", str(out)]) == 0
    return json.loads(out.read_text())


def check_measured(measured: dict[str, Any], size: int, repeat: int) -> None:
    samples = measured["samples_s"]
    assert measured["size"] == size and measured["repeat"] == len(samples) == repeat
    assert all(math.isfinite(s) and s > 0 for s in samples)
    assert measured["number"] >= 1
    assert measured["median_s"] == statistics.median(samples)
    assert measured["throughput_per_s"] == pytest.approx(size / measured["median_s"], rel=1e-12)


def check_comparisons(backend: dict[str, Any], size: int = 100, repeat: int = 2) -> None:
    for row in backend["comparisons"]:
        check_measured(row["ours"], size, repeat)
        if row["native"] is None:
            assert row["ratio_native_over_ours"] is None
            continue
        check_measured(row["native"], size, repeat)
        expected = row["native"]["median_s"] / row["ours"]["median_s"]
        assert row["ratio_native_over_ours"] == pytest.approx(expected, rel=1e-12)
        if row["dtype"] == "float32":  # both sides compute the same mean loss
            assert row["disagreement"] is None, row


def variants(backend: dict[str, Any]) -> set[tuple[str, str, str, str | None]]:
    return {
        (
            row["dtype"],
            row["task"],
            row["ours"]["label"],
            row["native"]["label"] if row["native"] else None,
        )
        for row in backend["comparisons"]
    }


def test_numpy_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = bench(tmp_path, "--backend", "numpy", *TINY)
    out = capsys.readouterr().out
    assert (
        data["command"] == f"bce bench --backend numpy --sizes 100 --repeat 2 --json "
        f"{tmp_path / 'bench.json'}"
    )
    assert {"cpu", "cores", "python", "platform"} <= set(data["machine"])
    assert "numpy" in data["machine"]["versions"]
    assert data["config"]["sizes"] == [100] and data["config"]["dtypes"] == ["float32"]
    assert "above 1: bce-core is faster" in data["ratio"]
    (numpy,) = data["backends"]
    assert (numpy["name"], numpy["device"], numpy["failures"]) == ("numpy", "cpu", [])
    assert variants(numpy) == {
        ("float32", "forward", "api", "naive formula"),
        ("float32", "forward+grad", "value_and_grad", "naive formula + grad"),
    }
    check_comparisons(numpy)
    losses = {row["ours"]["loss"] for row in numpy["comparisons"]}
    assert len(losses) == 1 and 0.5 < losses.pop() < 2.5  # the same mean loss in both tasks
    assert [row["size"] for row in numpy["overhead"]] == [1, 10, 100, 1000]
    for row in numpy["overhead"]:
        check_measured(row["api"], row["size"], 2)
        check_measured(row["direct"], row["size"], 2)
        paired = [a - d for a, d in zip(row["api"]["samples_s"], row["direct"]["samples_s"])]
        assert row["overhead_s"] == pytest.approx(statistics.median(paired), rel=1e-12)
    assert data["skipped"] == []
    assert "bce bench on" in out and "native ÷ bce-core time" in out
    assert "naive formula" in out and "per-call overhead" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sizes", "0"], "argument --sizes: '0' is not a positive integer"),
        (["--sizes", "2.5"], "argument --sizes: '2.5' is not a positive integer"),
        (["--sizes", "1e3,ten"], "argument --sizes: 'ten' is not a positive integer"),
        (["--sizes", ","], "argument --sizes: no size given"),
        (["--dtype", "float8"], "argument --dtype: unknown dtype 'float8'"),
        (["--dtype", "flaot32"], "did you mean 'float32'?"),
        (["--repeat", "0"], "argument --repeat: '0' is not a positive integer"),
    ],
)
def test_argument_errors_name_the_argument(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["bench", *args])
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_sizes_accept_scientific_notation_and_drop_duplicates() -> None:
    assert parse_sizes("1e3,1e5,1e7") == (1_000, 100_000, 10_000_000)
    assert parse_sizes("1000, 10_000,1e3") == (1_000, 10_000)


def test_unknown_backend_suggests_a_name(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--backend", "nmupy"]) == 2
    err = capsys.readouterr().err
    assert "no backend named 'nmupy'" in err and "Did you mean 'numpy'?" in err


GHOSTS = """
from bce_core.plugin import BackendSpec, hookimpl

class Broken:
    def __init__(self):
        raise RuntimeError("cannot start")

@hookimpl
def bce_backends():
    return [
        BackendSpec(name="ghost", loader="ghost_plugin:Broken",
                    requires=("ghost_framework_that_is_not_installed",), extra="ghost"),
        BackendSpec(name="broken", loader="ghost_plugin:Broken"),
        # NumPy's backend under another name: it owns no array type, NumPy arrays pick "numpy".
        BackendSpec(name="mine", loader="bce_numpy.backend:NumpyBackend"),
    ]
"""


@pytest.fixture
def ghosts(make_distribution: Any) -> None:
    make_distribution("ghost-bce", {"ghost": "ghost_plugin"}, {"ghost_plugin": GHOSTS})


def test_unavailable_backends_are_skipped_and_listed(
    ghosts: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = bench(tmp_path, "--backend", "numpy,ghost", "--backend", "broken", *TINY)
    out = capsys.readouterr().out
    assert [b["name"] for b in data["backends"]] == ["numpy"]
    skipped = {s["name"]: s for s in data["skipped"]}
    assert skipped["ghost"]["status"] == "not installed"
    assert "pip install 'bce-core[ghost]'" in skipped["ghost"]["reason"]
    assert skipped["broken"]["status"] == "failed"
    assert "cannot start" in skipped["broken"]["reason"]
    assert "skipped ghost (not installed)" in out and "skipped broken (failed)" in out
    assert "pip install 'bce-core[ghost]'" in out


def test_nothing_to_time_exits_1(ghosts: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--backend", "ghost", *TINY]) == 1
    assert "no backend was timed" in capsys.readouterr().out


def test_backend_without_native_baseline_is_timed_alone(ghosts: None, tmp_path: Path) -> None:
    data = bench(tmp_path, "--backend", "mine", *TINY)
    (mine,) = data["backends"]
    assert variants(mine) == {
        ("float32", "forward", "api", None),
        ("float32", "forward+grad", "value_and_grad", None),
    }
    check_comparisons(mine)
    notes = " ".join(mine["notes"])
    assert "no native baseline" in notes and "backend='mine'" in notes


def test_write_readme_replaces_the_section(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# Title\n\n<!-- bench:begin -->\nold\n<!-- bench:end -->\n\nafter\n")
    assert (
        main(["bench", "--backend", "numpy", *TINY, "--write-readme", "--readme", str(readme)]) == 0
    )
    text = readme.read_text()
    section = text.split("<!-- bench:begin -->")[1].split("<!-- bench:end -->")[0]
    assert text.startswith("# Title\n\n") and text.endswith("<!-- bench:end -->\n\nafter\n")
    assert "old" not in section
    assert (
        f"`bce bench --backend numpy --sizes 100 --repeat 2 --write-readme --readme "
        f"{readme}`" in section
    )
    assert "cores" in section and "| numpy | 100 | float32 | forward |" in section
    assert "per-call" in section.lower()


def test_write_readme_without_markers_fails_before_timing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# no markers here\n")
    assert (
        main(["bench", "--backend", "numpy", *TINY, "--write-readme", "--readme", str(readme)]) == 1
    )
    captured = capsys.readouterr()
    assert "<!-- bench:begin -->" in captured.err and "markers" in captured.err
    assert "naive formula" not in captured.out  # nothing was timed
    assert readme.read_text() == "# no markers here\n"


def test_interleaved_rounds_call_each_function_the_same_number_of_times() -> None:
    calls = {"slow": 0, "fast": 0}

    def counting(key: str) -> Any:
        def run() -> None:
            calls[key] += 1

        return run

    # "slow" is known to take 10 s a call: one call per sample and no estimate.
    timings = interleaved(
        {"slow": counting("slow"), "fast": counting("fast")}, repeat=4, known={"slow": 10.0}
    )
    assert calls["slow"] == 1 + 4  # the warm-up, then one call in each round
    assert timings["slow"].number == 1 and timings["slow"].repeat == 4
    assert timings["fast"].repeat == 4 and timings["fast"].number >= 1
    assert all(s > 0 for t in timings.values() for s in t.samples)


def test_importing_the_bench_imports_no_framework() -> None:
    script = (
        "import sys, bce_bench.cli, bce_bench.suite, bce_bench.report\n"
        "from bce_core.cli import build_parser\n"
        "assert 'bench' in build_parser().format_help()\n"
        "print(sorted(m for m in ('torch', 'tensorflow', 'jax', 'keras', 'optax') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


FRAMEWORK_VARIANTS = {
    "torch": {
        ("forward", "api", "F.bce_with_logits"),
        ("forward+grad", "value_and_grad", "F.bce_with_logits + backward()"),
        ("forward+grad", "api + backward()", "F.bce_with_logits + backward()"),
    },
    "jax": {
        ("forward", "api", "optax.sigmoid_bce"),
        ("forward", "jit(api)", "jit(optax.sigmoid_bce)"),
        ("forward+grad", "value_and_grad", "jit(value_and_grad(optax))"),
        ("forward+grad", "jit(value_and_grad(api))", "jit(value_and_grad(optax))"),
    },
    "tensorflow": {
        ("forward", "api", "tf.nn.sigmoid_ce"),
        ("forward", "api @tf.function", "tf.nn.sigmoid_ce @tf.function"),
        ("forward", "api @tf.function", "keras.ops.bce @tf.function"),
        ("forward+grad", "value_and_grad", "tf.nn.sigmoid_ce + tape"),
        ("forward+grad", "value_and_grad", "tf.nn.sigmoid_ce + tape @tf.function"),
        ("forward+grad", "value_and_grad", "keras.ops.bce + tape @tf.function"),
        ("forward+grad", "api + tape @tf.function", "tf.nn.sigmoid_ce + tape @tf.function"),
        ("forward+grad", "api + tape @tf.function", "keras.ops.bce + tape @tf.function"),
    },
}
NEEDS = {"torch": ("torch",), "jax": ("jax", "optax"), "tensorflow": ("tensorflow", "keras")}


@pytest.mark.parametrize("framework", sorted(FRAMEWORK_VARIANTS))
def test_framework_against_its_own_loss(framework: str, tmp_path: Path) -> None:
    for module in NEEDS[framework]:
        pytest.importorskip(module)
    data = bench(tmp_path, "--backend", framework, "--dtype", "float32,bfloat16", *TINY)
    if data["skipped"]:  # the framework is installed but its backend does not load
        pytest.skip(f"{framework} backend: {data['skipped'][0]['reason']}")
    (backend,) = data["backends"]
    assert backend["failures"] == []
    for dtype in ("float32", "bfloat16"):
        found = {(task, ours, native) for d, task, ours, native in variants(backend) if d == dtype}
        assert found == FRAMEWORK_VARIANTS[framework], dtype
    check_comparisons(backend)
    assert len(backend["overhead"]) == 4


def test_bfloat16_without_ml_dtypes_is_skipped_for_numpy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ml_dtypes", None)  # import ml_dtypes now raises ImportError
    data = bench(tmp_path, "--backend", "numpy", "--dtype", "float32,bfloat16", *TINY)
    (numpy,) = data["backends"]
    assert {row["dtype"] for row in numpy["comparisons"]} == {"float32"}
    assert any("bfloat16 not timed" in note and "ml_dtypes" in note for note in numpy["notes"])
