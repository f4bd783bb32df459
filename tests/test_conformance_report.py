"""The conformance HTML report: error profiles against the exact value, with each
framework's own loss drawn next to ours, and one figure per backend."""

from __future__ import annotations

import base64
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from bce_conformance import oracle
from bce_conformance.profiles import ErrorProfile, error_profile, exact_sweep
from bce_conformance.report import GRADE_A_ULP, figure_size, plot_backend, write_html
from bce_conformance.runner import Report
from bce_numpy.backend import NumpyBackend

#: The sweep point nearest 20: there sigmoid(x) rounds to 1 in float32 and
#: sigmoid(x) - 1 loses every digit, while the exact gradient is -2.06e-9.
NEAR_20 = 19.95


def at(profile: ErrorProfile, logit: float) -> int:
    """Index of the sweep point nearest ``logit`` (+-inf included)."""
    if np.isinf(logit):
        return int(np.flatnonzero(profile.logits == logit)[0])
    finite = np.where(np.isfinite(profile.logits), profile.logits, np.nan)
    return int(np.nanargmin(np.abs(finite - logit)))


def assert_ours_grade_a(profile: ErrorProfile) -> None:
    for name, errors in profile.ours.items():
        assert np.all(errors <= GRADE_A_ULP), (
            profile.backend,
            profile.dtype,
            name,
            float(errors.max()),
        )


class PlainBackend:
    """A backend with only the methods of ``bce_core.plugin.Backend``, as a third party's may be."""

    name = "plain"

    def __init__(self) -> None:
        self._inner = NumpyBackend()

    def version(self) -> str:
        return "0.1"

    def devices(self) -> list[str]:
        return ["cpu"]

    def asarray(self, array, device=None):
        return self._inner.asarray(array, device)

    def to_numpy(self, array):
        return np.asarray(array)

    def device_of(self, array):
        return "cpu"

    def size_thresholds(self, device):
        return ()

    def binary_cross_entropy_with_logits(self, logits, targets, **options):
        return self._inner.binary_cross_entropy_with_logits(logits, targets, **options)

    def binary_cross_entropy(self, probs, targets, **options):
        return self._inner.binary_cross_entropy(probs, targets, **options)

    def value_and_grad(self, logits, targets, **options):
        return self._inner.value_and_grad(logits, targets, **options)

    def grad_hess(self, logits, targets, **options):
        return self._inner.grad_hess(logits, targets, **options)


def report_of(*backends) -> Report:
    return Report(
        "1.0",
        [
            {"name": b.name, "status": "ok", "version": b.version(), "devices": ["cpu"]}
            for b in backends
        ],
        [],
    )


def png_size(encoded: str) -> tuple[int, int]:
    png = base64.b64decode(encoded)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


# -- the profiles --------------------------------------------------------------


def test_exact_values_are_computed_once_per_dtype() -> None:
    assert exact_sweep("float32") is exact_sweep("float32")
    assert exact_sweep("float32") is not exact_sweep("float64")
    assert exact_sweep("float16").logits.dtype == np.float16


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_vectorised_ulp_errors_match_the_oracle(dtype: str) -> None:
    # The textbook formula gives NaN, inf, zeros and cancellations: every rule of ulp_error.
    sweep = exact_sweep(dtype)
    loss, grad = NumpyBackend().framework_loss(sweep.logits, sweep.targets)
    x, y = sweep.logits.astype(float).tolist(), sweep.targets.astype(float).tolist()
    exact_grads = [oracle.element_grad(a, b) for a, b in zip(x, y)]
    expected = {
        "loss": oracle.ulp_errors(loss, [oracle.element_loss(a, b) for a, b in zip(x, y)], dtype),
        "grad": oracle.ulp_errors(
            grad,
            [g for g, _ in exact_grads],
            dtype,
            [None if b in (0.0, 1.0) else larger for b, (_, larger) in zip(y, exact_grads)],
        ),
    }
    for name, got in (("loss", sweep.loss.errors(loss)), ("grad", sweep.grad.errors(grad))):
        np.testing.assert_array_equal(np.isinf(got), np.isinf(expected[name]))
        finite = np.isfinite(got)
        np.testing.assert_allclose(got[finite], expected[name][finite], rtol=1e-9, atol=1e-12)
    assert np.isinf(expected["loss"]).sum() == 4  # NaN at +-inf, for targets 0 and 1 / 0.3


def test_numpy_profile_ours_exact_textbook_formula_is_not() -> None:
    profile = error_profile(NumpyBackend(), "cpu", "float32")
    assert_ours_grade_a(profile)
    assert profile.framework is not None and profile.note == ""
    assert profile.framework_label.startswith("The textbook max(x, 0)")
    # sigmoid(x) - 1 at x = 20 is 1 - 1 = 0: the whole gradient is lost.
    assert profile.framework["grad y=1"][at(profile, NEAR_20)] > 1e6
    # max(x, 0) - x y at x = +inf is inf - inf = NaN; the exact loss is 0.
    assert np.isinf(profile.framework["loss y=1"][at(profile, np.inf)])
    assert profile.ours["loss y=1"][at(profile, np.inf)] == 0.0


def test_torch_framework_loses_digits_where_the_backend_does_not() -> None:
    pytest.importorskip("torch")
    from bce_torch.backend import TorchBackend

    profile = error_profile(TorchBackend(), "cpu", "float32")
    assert_ours_grade_a(profile)
    theirs = profile.framework
    assert theirs is not None
    assert profile.framework_label.startswith("torch.nn.functional.binary_cross_entropy_with")
    # autograd's sigmoid(x) - y: 0 at x = 20 for target 1.
    assert theirs["grad y=1"][at(profile, NEAR_20)] > 1e6
    # (1 - y) x + max(-x, 0) + log(...) for target 0 cancels to 0 at x = -20.
    assert theirs["loss y=0"][at(profile, -20)] > 1e6
    # NaN at x = -inf for target 1 (the exact loss is +inf) and at +inf for target 1 (exact 0).
    assert np.isinf(theirs["loss y=1"][at(profile, -np.inf)])
    assert np.isinf(theirs["loss y=1"][at(profile, np.inf)])
    # Where nothing cancels the framework is as good as the backend.
    assert theirs["loss y=1"][at(profile, 0.5)] <= 1


def test_jax_framework_is_optax() -> None:
    pytest.importorskip("jax")
    pytest.importorskip("optax")
    from bce_jax.backend import JaxBackend

    profile = error_profile(JaxBackend(), "cpu", "float32")
    assert_ours_grade_a(profile)
    assert profile.framework_label.startswith("optax.sigmoid_binary_cross_entropy")
    # optax gives NaN at x = +inf for target 1 and at -inf for target 0.
    assert np.isinf(profile.framework["loss y=1"][at(profile, np.inf)])
    assert np.isinf(profile.framework["loss y=0"][at(profile, -np.inf)])
    assert np.isfinite(profile.framework["grad y=1"]).all()


def test_backend_without_framework_loss_gets_its_own_curves(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    profile = error_profile(PlainBackend(), "cpu", "float32")
    assert profile.framework is None and "framework_loss" in profile.note
    assert_ours_grade_a(profile)
    page = tmp_path / "plain.html"
    write_html(report_of(PlainBackend()), page, [profile])
    text = page.read_text()
    assert text.count("<figure>") == 1 and 'id="backend-plain"' in text
    assert "no framework curve" in text


def test_failing_framework_loss_is_a_note_not_an_error() -> None:
    class Refusing(PlainBackend):
        name = "refusing"

        def framework_loss(self, logits, targets):
            """A framework that has no float16 kernel."""
            raise TypeError("no float16 kernel")

    profile = error_profile(Refusing(), "cpu", "float16")
    assert profile.framework is None
    assert profile.note == "no framework curve for float16: TypeError: no float16 kernel"


# -- the page and its figures ---------------------------------------------------


def test_page_has_one_figure_per_backend_with_caption(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    profiles = [error_profile(NumpyBackend(), "cpu", d) for d in ("float32", "float64")]
    profiles.append(error_profile(PlainBackend(), "cpu", "float32"))
    page = tmp_path / "report.html"
    write_html(report_of(NumpyBackend(), PlainBackend()), page, profiles)
    text = page.read_text()
    assert text.count("<figure>") == 2 and text.count("data:image/png;base64,") == 2
    assert re.findall(r'<h3 id="backend-(\w+)">', text) == ["numpy", "plain"]
    captions = re.findall(r"<figcaption>(.*?)</figcaption>", text)
    assert "dashed: The textbook" in captions[0] and "no framework curve" in captions[1]
    assert 'src="http' not in text  # self-contained


def test_figure_size_follows_the_number_of_panels() -> None:
    pytest.importorskip("matplotlib")
    one = [error_profile(NumpyBackend(), "cpu", "float32")]
    two = one + [error_profile(NumpyBackend(), "cpu", "float64")]
    width_one, height_one = png_size(plot_backend(one))
    width_two, height_two = png_size(plot_backend(two))
    assert (width_one, height_one) == tuple(round(v * 90) for v in figure_size(1, 2))
    assert (width_two, height_two) == tuple(round(v * 90) for v in figure_size(2, 2))
    assert width_two > width_one and height_two == height_one
    assert figure_size(4, 4)[1] > figure_size(4, 2)[1]  # a second device adds two rows


def test_page_without_matplotlib_has_a_note(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now fails
    page = tmp_path / "report.html"
    write_html(report_of(NumpyBackend()), page, [error_profile(NumpyBackend(), "cpu", "float32")])
    text = page.read_text()
    assert "Install matplotlib" in text and "<img" not in text


def test_cli_writes_the_page(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from bce_conformance.cli import main

    page = tmp_path / "cli.html"
    assert main(["--backend", "numpy", "--dtype", "float32", "--html", str(page)]) == 0
    text = page.read_text()
    assert text.count("<figure>") == 1 and "float32" in text
