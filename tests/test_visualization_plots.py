"""Progress, loss-term and per-class Dice plots: real PNG files read back with matplotlib."""
from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.image import imread

from mipcandy.visualization import ema_curve, plot_class_dice, plot_progress, plot_series
from mipcandy.visualization.plots import _finite_line

ROOT = Path(__file__).resolve().parents[1]


def _history(num_epochs: int = 30, *, validate_every: int = 3) -> dict[str, list[float]]:
    rng = np.random.default_rng(7)
    epochs = np.arange(1, num_epochs + 1)
    return {
        "combined loss": list(1 / np.sqrt(epochs) + rng.normal(0, 0.01, num_epochs)),
        "val loss": [1.1 / math.sqrt(e) if e % validate_every == 0 else math.nan for e in epochs],
        "val score": [0.8 * (1 - math.exp(-e / 10)) if e % validate_every == 0 else math.nan for e in epochs],
        "predicted max": [math.nan] * (num_epochs - 5) + [0.82] * 5,
        "epoch duration": list(20 + rng.normal(0, 1, num_epochs)),
        "learning rate": list(1e-2 * (1 - (epochs - 1) / num_epochs) ** 0.9),
    }


def _no_temporaries(folder: Path) -> None:
    assert not [p.name for p in folder.iterdir() if ".tmp" in p.name], "atomic writes left temporary files"


def _has_colour(png: np.ndarray, colour: str, tolerance: float = 0.02) -> bool:
    return bool((np.abs(png[..., :3] - np.asarray(to_rgb(colour))) < tolerance).all(axis=-1).any())


def test_ema_matches_closed_form_and_skips_nan() -> None:
    # a step from 0 to 1: after k updates the EMA is 1 - s^k (independent closed form)
    values = [0.0, 1.0, math.nan, 1.0, 1.0, math.nan, 1.0]
    smoothed = ema_curve(values, 0.9)
    assert math.isnan(smoothed[2]) and math.isnan(smoothed[5])
    finite = smoothed[np.isfinite(smoothed)]
    np.testing.assert_allclose(finite, [1 - 0.9 ** k for k in range(5)])
    assert math.isnan(ema_curve([math.nan, math.nan])[1])
    with pytest.raises(ValueError, match="smoothing"):
        ema_curve(values, 1.0)


def test_lines_join_the_epochs_that_have_values() -> None:
    figure = Figure()
    FigureCanvasAgg(figure)
    axes: Axes = figure.add_subplot()
    line = _finite_line(axes, [0.5, math.nan, math.nan, 0.7, math.nan, 0.9])
    assert line is not None
    np.testing.assert_array_equal(line.get_xdata(), [1, 4, 6])  # 1-based epochs
    np.testing.assert_array_equal(line.get_ydata(), [0.5, 0.7, 0.9])
    assert _finite_line(axes, [math.nan, math.nan]) is None
    assert _finite_line(axes, None) is None


def test_progress_png_has_three_panels_of_data(tmp_path: Path) -> None:
    path = tmp_path / "progress.png"
    path.write_bytes(b"stale")
    plot_progress(_history(), path)
    png = imread(path)
    assert png.ndim == 3 and png.shape[0] > 500 and png.shape[1] > 500
    for colour in ("tab:blue", "tab:red", "tab:green", "tab:purple"):  # train, val loss, score, predicted max
        assert _has_colour(png, colour), colour
    _no_temporaries(tmp_path)


def test_progress_with_no_validation_yet(tmp_path: Path) -> None:
    history = _history(4, validate_every=10)  # val loss and val score all NaN
    del history["predicted max"], history["learning rate"]
    plot_progress(history, tmp_path / "progress.png")
    png = imread(tmp_path / "progress.png")
    assert _has_colour(png, "tab:blue")
    assert not _has_colour(png, "tab:green") and not _has_colour(png, "tab:red")
    plot_progress({}, tmp_path / "empty.png")  # before the first epoch: empty panels, no crash
    assert imread(tmp_path / "empty.png").shape == png.shape


def test_series_and_class_dice(tmp_path: Path) -> None:
    history = _history()
    history["dice loss"] = [v / 2 for v in history["combined loss"]]
    history["ce loss"] = [math.nan] + history["dice loss"][1:]
    plot_series(history, ["dice loss", "ce loss"], tmp_path / "loss terms.png", title="loss terms", ylabel="loss")
    for index in range(1, 21):  # 20 classes: the legend and the palette must cope
        history[f"val dice class {index}"] = [min(1.0, index / 20 + 0.01 * e) for e in range(30)]
    plot_class_dice(history, tmp_path / "class dice.png")
    for name in ("loss terms.png", "class dice.png"):
        png = imread(tmp_path / name)
        assert png.ndim == 3 and png.shape[2] in (3, 4) and png.shape[0] >= 400
        assert 0.0 <= png.min() and png.max() <= 1.0
    _no_temporaries(tmp_path)


def test_bad_requests_are_explained(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no history for \\['dice loss'\\]"):
        plot_series(_history(), ["dice loss"], tmp_path / "x.png", title="loss", ylabel="loss")
    with pytest.raises(ValueError, match="per-class Dice"):
        plot_class_dice(_history(), tmp_path / "x.png")
    with pytest.raises(ValueError, match="labels"):
        plot_series(_history(), ["val loss"], tmp_path / "x.png", title="t", ylabel="y", labels=["a", "b"])
    assert not (tmp_path / "x.png").exists()


def test_no_pyplot_and_lazy_import(tmp_path: Path) -> None:
    """Rendering never imports pyplot (no global figures), and importing the package imports no matplotlib."""
    script = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        import numpy as np
        import mipcandy.visualization as viz
        assert "matplotlib" not in sys.modules
        folder = Path({str(tmp_path)!r})
        viz.plot_progress({{"combined loss": [1.0, 0.5], "val score": [float("nan"), 0.4]}}, folder / "p.png")
        label = np.zeros((1, 4, 8, 8), dtype=np.int64)
        label[0, 2, 2:5, 2:5] = 1
        viz.save_preview(np.random.rand(1, 4, 8, 8), label, label, folder, "case", surfaces=False)  # pyvista
        # itself imports pyplot (pyvista.plotting.colors) without making a figure; the 2D previews never do
        assert "matplotlib.pyplot" not in sys.modules
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, encoding="utf-8", timeout=120,
                            env={**os.environ, "PYTHONPATH": str(ROOT / "core")})
    assert result.returncode == 0, result.stderr
