"""``bce bench``: the command end to end on tiny sizes, its JSON, its calling styles, its
picture, its errors and its skips.

No test asserts how fast anything is: only that every timing is there, positive and
finite, and that medians, throughputs and ratios are computed from the samples.
"""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from bce_bench.options import DEFAULT_SIZES, OVERHEAD_SIZES, parse_sizes
from bce_bench.results import BenchResult
from bce_bench.timing import interleaved, paired
from bce_bench.variants import FORWARD, FORWARD_GRAD, STYLES, Variant, pairs, styles_for
from bce_core.cli import main

TINY = ["--sizes", "100", "--repeat", "2"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SVG = "{http://www.w3.org/2000/svg}"


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
    """(dtype, calling style, our label, native label) of every comparison."""
    return {
        (
            row["dtype"],
            row["style"],
            row["ours"]["label"],
            row["native"]["label"] if row["native"] else None,
        )
        for row in backend["comparisons"]
    }


def check_overhead(backend: dict[str, Any], repeat: int = 2) -> None:
    """The overhead of each function at each small size, as the median of paired differences."""
    found = [(row["function"], row["size"]) for row in backend["overhead"]]
    assert found == [
        (function, size) for function in ("loss", "value_and_grad") for size in OVERHEAD_SIZES
    ]
    for row in backend["overhead"]:
        check_measured(row["api"], row["size"], repeat)
        check_measured(row["direct"], row["size"], repeat)
        assert row["api"]["number"] == row["direct"]["number"] == 1  # single calls, paired
        diffs = [a - d for a, d in zip(row["api"]["samples_s"], row["direct"]["samples_s"])]
        assert row["overhead_s"] == pytest.approx(statistics.median(diffs), rel=1e-12)
        assert row["overhead_us"] == pytest.approx(row["overhead_s"] * 1e6, rel=1e-12)
        low, high = row["overhead_interval_95_us"]
        assert low <= row["overhead_us"] <= high and row["rounds"] == repeat


def test_numpy_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = bench(tmp_path, "--backend", "numpy", *TINY)
    out = capsys.readouterr().out
    assert (
        data["command"] == f"bce bench --backend numpy --sizes 1e2 --repeat 2 --json "
        f"{tmp_path / 'bench.json'}"
    )
    assert {"cpu", "cores", "python", "platform"} <= set(data["machine"])
    assert "numpy" in data["machine"]["versions"]
    assert data["config"]["sizes"] == [100] and data["config"]["dtypes"] == ["float32"]
    assert "above 1: bce-core is faster" in data["ratio"]
    (numpy,) = data["backends"]
    assert (numpy["name"], numpy["device"], numpy["failures"]) == ("numpy", "cpu", [])
    assert variants(numpy) == {
        ("float32", "loss", "api", "naive formula"),
        ("float32", "value_and_grad", "value_and_grad", "naive formula + grad"),
    }
    assert {row["style"]: row["task"] for row in numpy["comparisons"]} == {
        "loss": FORWARD,
        "value_and_grad": FORWARD_GRAD,
    }
    check_comparisons(numpy)
    losses = {row["ours"]["loss"] for row in numpy["comparisons"]}
    assert len(losses) == 1 and 0.5 < losses.pop() < 2.5  # the same mean loss in both tasks
    check_overhead(numpy)
    assert data["skipped"] == []
    assert "bce bench on" in out and "native ÷ bce-core time" in out
    assert "naive formula" in out and "per-call overhead" in out
    assert "calling style" in out and "by calling style and size" in out


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
        (["--plot", "bench.pdf"], "argument --plot: 'bench.pdf' does not end in .png or .svg"),
        (["--plot", "bench"], "argument --plot: 'bench' does not end in .png or .svg"),
        (["--plot", "png"], "argument --plot: 'png' does not end in .png or .svg"),
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


def test_default_sizes_span_a_batch_to_a_large_evaluation() -> None:
    assert DEFAULT_SIZES == tuple(10**k for k in range(2, 8))


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
        ("float32", "loss", "api", None),
        ("float32", "value_and_grad", "value_and_grad", None),
    }
    check_comparisons(mine)
    notes = " ".join(mine["notes"])
    assert "no native baseline" in notes and "backend='mine'" in notes


def test_write_readme_replaces_the_section(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# Title\n\n<!-- bench:begin -->\nOLD TABLE\n<!-- bench:end -->\n\nafter\n")
    assert (
        main(["bench", "--backend", "numpy", *TINY, "--write-readme", "--readme", str(readme)]) == 0
    )
    text = readme.read_text()
    section = text.split("<!-- bench:begin -->")[1].split("<!-- bench:end -->")[0]
    assert text.startswith("# Title\n\n") and text.endswith("<!-- bench:end -->\n\nafter\n")
    assert "OLD TABLE" not in section
    assert (
        f"`bce bench --backend numpy --sizes 1e2 --repeat 2 --write-readme --readme "
        f"{readme}`" in section
    )
    assert "cores" in section and "| numpy | loss | `api` | `naive formula` |" in section
    assert "| numpy | value_and_grad | `value_and_grad` | `naive formula + grad` |" in section
    assert "<details><summary>Median times" in section
    assert "per-call overhead" in section.lower() and "| numpy | value_and_grad | 1 |" in section
    assert "![" not in section  # no picture without --plot


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
    calls = {"slow": 0, "compiled": 0, "fast": 0}

    def counting(key: str, seconds: float = 0.0) -> Any:
        def run() -> None:
            calls[key] += 1
            time.sleep(seconds)

        return run

    # "slow" and "compiled" took 10 s at their first call; "slow" still takes more than the
    # target: one more call shows it, then one call per sample and no estimate. "compiled"
    # has become fast: it is estimated, and looped.
    timings = interleaved(
        {
            "slow": counting("slow", 0.004),
            "compiled": counting("compiled"),
            "fast": counting("fast"),
        },
        repeat=4,
        target=0.002,
        known={"slow": 10.0, "compiled": 10.0},
    )
    assert calls["slow"] == 1 + 1 + 4  # the warm-up, the check, then one call in each round
    assert timings["slow"].number == 1 and timings["slow"].repeat == 4
    assert calls["compiled"] > 1 + 1 + 4
    assert timings["fast"].repeat == timings["compiled"].repeat == 4
    assert all(t.number >= 1 for t in timings.values())
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


#: Each framework's calling styles: (style, our call, the native call it is paired with).
FRAMEWORK_VARIANTS = {
    "torch": {
        ("eager loss", "api", "F.bce_with_logits"),
        ("eager loss + backward()", "api + backward()", "F.bce_with_logits + backward()"),
        ("eager value_and_grad", "value_and_grad", "F.bce_with_logits + backward()"),
    },
    "jax": {
        ("eager loss", "api", "optax.sigmoid_bce"),
        ("jit loss", "jit(api)", "jit(optax.sigmoid_bce)"),
        ("jit value_and_grad", "jit(value_and_grad(api))", "jit(value_and_grad(optax))"),
        ("eager value_and_grad", "value_and_grad", "jit(value_and_grad(optax))"),
    },
    "tensorflow": {
        ("eager loss", "api", "tf.nn.sigmoid_ce"),
        ("eager loss + tape", "api + tape", "tf.nn.sigmoid_ce + tape"),
        ("eager value_and_grad", "value_and_grad", "tf.nn.sigmoid_ce + tape"),
        ("tf.function loss", "api @tf.function", "tf.nn.sigmoid_ce @tf.function"),
        (
            "tf.function loss + tape",
            "api + tape @tf.function",
            "tf.nn.sigmoid_ce + tape @tf.function",
        ),
        ("tf.function loss, Keras baseline", "api @tf.function", "keras.ops.bce @tf.function"),
        (
            "tf.function loss + tape, Keras baseline",
            "api + tape @tf.function",
            "keras.ops.bce + tape @tf.function",
        ),
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
    check_overhead(backend)


def test_bfloat16_without_ml_dtypes_is_skipped_for_numpy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ml_dtypes", None)  # import ml_dtypes now raises ImportError
    data = bench(tmp_path, "--backend", "numpy", "--dtype", "float32,bfloat16", *TINY)
    (numpy,) = data["backends"]
    assert {row["dtype"] for row in numpy["comparisons"]} == {"float32"}
    assert any("bfloat16 not timed" in note and "ml_dtypes" in note for note in numpy["notes"])


@pytest.mark.parametrize("framework", sorted(FRAMEWORK_VARIANTS))
def test_calling_styles_pair_ours_with_the_native_call_made_the_same_way(framework: str) -> None:
    styles = STYLES[framework]
    assert {(s.name, s.ours, s.native) for s in styles} == FRAMEWORK_VARIANTS[framework]
    assert len({s.name for s in styles}) == len(styles)  # a style is named once
    for style in styles:  # compiled with compiled, eager with eager
        native = style.native or ""
        assert ("@tf.function" in style.ours) == ("@tf.function" in native)
        if style.name.startswith("jit"):
            assert style.ours.startswith("jit(") and native.startswith("jit(")


def test_pairs_follow_the_styles_and_keep_ours_without_a_native() -> None:
    def variant(side: str, task: str, label: str) -> Variant:
        return Variant(side, task, label, "eager", lambda: 0.0)

    ours = [variant("ours", FORWARD, "api"), variant("ours", FORWARD_GRAD, "value_and_grad")]
    native = variant("native", FORWARD, "naive formula")
    found = pairs(styles_for("numpy"), [*ours, native])
    assert [(s.name, a.label, b.label if b else None) for s, a, b in found] == [
        ("loss", "api", "naive formula"),
        ("value_and_grad", "value_and_grad", None),  # its native raised or is missing
    ]
    assert pairs(styles_for("numpy"), [native]) == []  # nothing of ours: nothing to report


def test_paired_timer_alternates_single_calls() -> None:
    calls: list[str] = []
    settled: list[Any] = []
    first, second = paired(
        lambda: calls.append("a"), lambda: calls.append("b"), rounds=3, settle=settled.append
    )
    assert calls[-6:] == ["a", "b", "b", "a", "a", "b"]  # after the warm-up calls
    assert (first.number, first.repeat, second.repeat) == (1, 3, 3)
    assert len(settled) == 6


# -- the picture and the saved run ----------------------------------------------------------


def synthetic_run() -> dict[str, Any]:
    """A saved run of two backends, two styles each and two dtypes: 8 lines to draw."""

    def measured(label: str, seconds: float, size: int) -> dict[str, Any]:
        return {
            "label": label,
            "mode": "eager",
            "median_s": seconds,
            "size": size,
            "samples_s": [seconds],
            "number": 1,
            "loss": 0.5,
        }

    backends = []
    for name in ("numpy", "torch"):
        rows = [
            {
                "backend": name,
                "size": size,
                "dtype": dtype,
                "task": task,
                "style": style,
                "ours": measured(ours, 1e-6 * size**0.5, size),
                "native": measured("theirs", 2e-6 * size**0.4, size),
                "disagreement": None,
            }
            for dtype in ("float32", "float64")
            for style, task, ours in (("loss", FORWARD, "api"), ("vag", FORWARD_GRAD, "vag"))
            for size in (100, 1000, 10_000)
        ]
        backends.append({"name": name, "version": "1.0", "comparisons": rows})
    machine = {
        "cpu": "Test CPU",
        "cores": 2,
        "logical_cpus": 2,
        "platform": "Linux",
        "python": "CPython 3",
        "versions": {},
        "load_average": [],
    }
    return {"command": "bce bench", "machine": machine, "config": {}, "backends": backends}


def svg_lines(path: Path) -> list[str]:
    """The ids of the plotted lines (the axes' own paths have other ids)."""
    root = ET.parse(path).getroot()  # valid XML, or this raises
    assert root.tag == f"{SVG}svg"
    ids = [g.get("id", "") for g in root.iter(f"{SVG}g")]
    return [i for i in ids if i.startswith("ratio-")]


@pytest.mark.parametrize("extension", ["png", "svg"])
def test_plot_of_a_saved_run_has_one_line_per_backend_style_and_dtype(
    extension: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("matplotlib")
    saved, picture = tmp_path / "run.json", tmp_path / "pictures" / f"bench.{extension}"
    picture.parent.mkdir()  # the folder must exist: bce bench creates none
    saved.write_text(json.dumps(synthetic_run()))
    assert main(["bench", "--from-json", str(saved), "--plot", str(picture)]) == 0
    out = capsys.readouterr().out
    assert f"wrote {picture} (8 lines)" in out and "by calling style and size" in out
    if extension == "png":
        assert picture.read_bytes().startswith(PNG_MAGIC)
    else:
        assert svg_lines(picture) == [f"ratio-{n}" for n in range(8)]
        text = picture.read_text()
        assert "Test CPU" in text and "float32, float64" in text  # the title


def test_bench_run_writes_its_plot_and_the_readme_links_it(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    readme, picture = tmp_path / "README.md", tmp_path / "docs" / "bench.svg"
    picture.parent.mkdir()
    readme.write_text("<!-- bench:begin -->\n<!-- bench:end -->\n")
    args = ["--plot", str(picture), "--write-readme", "--readme", str(readme)]
    data = bench(tmp_path, "--backend", "numpy", *TINY, *args)
    assert svg_lines(picture) == ["ratio-0", "ratio-1"]  # numpy's two calling styles
    assert f"--plot {picture}" in data["command"]
    assert "](docs/bench.svg)" in readme.read_text()


def test_plot_without_matplotlib_fails_before_timing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises
    picture = tmp_path / "bench.png"
    assert main(["bench", "--backend", "numpy", *TINY, "--plot", str(picture)]) == 1
    captured = capsys.readouterr()
    assert "--plot needs matplotlib (pip install 'bce-core[report]')" in captured.err
    assert "naive formula" not in captured.out and not picture.exists()  # nothing was timed


def test_bad_plot_extension_fails_before_timing(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["bench", "--backend", "numpy", *TINY, "--plot", "bench.jpg"])
    assert exited.value.code == 2
    captured = capsys.readouterr()
    assert "'bench.jpg' does not end in .png or .svg" in captured.err
    assert "bce bench on" not in captured.out


def test_saved_run_reports_again_as_measured(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = bench(tmp_path, "--backend", "numpy", *TINY)
    again = BenchResult.from_json(data)
    (numpy,) = again.backends
    assert [c.to_json() for c in numpy.comparisons] == data["backends"][0]["comparisons"]
    assert [o.to_json() for o in numpy.overheads] == data["backends"][0]["overhead"]
    readme = tmp_path / "README.md"
    readme.write_text("<!-- bench:begin -->\n<!-- bench:end -->\n")
    saved = str(tmp_path / "bench.json")
    assert main(["bench", "--from-json", saved, "--write-readme", "--readme", str(readme)]) == 0
    assert f"`{data['command']}`" in readme.read_text()  # the command that measured it
    assert "the run saved in" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sizes", "1e3"], "--from-json reports a saved run: --sizes cannot apply"),
        (["--backend", "numpy", "--repeat", "3"], "--backend, --repeat cannot apply"),
    ],
)
def test_from_json_takes_no_timing_option(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    saved = tmp_path / "run.json"
    saved.write_text(json.dumps(synthetic_run()))
    assert main(["bench", "--from-json", str(saved), *args]) == 1
    assert message in capsys.readouterr().err


def test_from_json_names_an_unreadable_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    assert main(["bench", "--from-json", str(broken)]) == 1
    assert f"cannot read {broken}" in capsys.readouterr().err
