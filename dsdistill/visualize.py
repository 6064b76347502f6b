"""Class-by-IPC image grids of a synthetic set, in pixel space.

Rows are classes (labelled with their names), columns the first ``per_class`` images of each
class. Images are mapped back to pixels with :meth:`SyntheticSet.to_pixels` (undoing ZCA or
mean/std normalisation) and clamped to [0, 1] for display only. The grid is assembled with
``torchvision.utils.make_grid`` and drawn with matplotlib's Agg canvas, never a display: the
grid is zoomed by an integer factor and drawn 1:1 with nearest-neighbour, so the PNG shows the
images' exact 8-bit values.

Example:
    >>> from dsdistill.visualize import save_grid          # doctest: +SKIP
    >>> save_grid("dm.h5", "grid.png", per_class=10)
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from torchvision.utils import make_grid

from dsdistill.errors import ConfigError
from dsdistill.synthetic import SyntheticSet

PADDING = 2  # pixels between cells (before zoom), as make_grid's default
PAD_VALUE = 1.0  # white gaps and blank cells
DPI = 100


@dataclass
class GridLayout:
    """Pixel geometry of a saved grid (all sizes in output pixels).

    Attributes:
        rows, cols: Classes shown and images per class.
        zoom: Integer upscaling of every image pixel.
        left, top: Margins holding the class names and the title.
        width, height: Size of the whole PNG.
        cell: Size of one image plus its padding, after zoom: ``(H + PADDING) * zoom``.
    """

    rows: int
    cols: int
    zoom: int
    left: int
    top: int
    width: int
    height: int
    cell: tuple[int, int]


def display_pixels(syn: SyntheticSet, per_class: int | None = None) -> tuple[Tensor, Tensor, int]:
    """The images of the grid, class-major, in [0, 1] pixel space.

    Args:
        syn: The set (any space; ZCA and normalisation are undone).
        per_class: Images per class to show (default: all of the largest class).

    Returns:
        ``(cells, filled, cols)``: ``cells`` is ``(K * cols, C, H, W)`` with row ``c`` holding
        the first ``cols`` images of class ``c`` (blank cells are ``PAD_VALUE``), ``filled`` the
        ``(K * cols,)`` bool mask of real images, and ``cols`` the number of columns.
    """
    if per_class is not None and per_class < 1:
        raise ConfigError(f"--per-class must be at least 1, got {per_class}")
    if syn.num_images == 0:
        raise ConfigError("the set has no images to show")
    pixels = syn.to_pixels().clamp(0, 1)
    k = syn.num_classes
    counts = torch.bincount(syn.labels, minlength=k)
    cols = int(counts.max()) if per_class is None else per_class
    order = torch.argsort(syn.labels, stable=True)
    rank = torch.empty_like(order)
    starts = torch.cumsum(counts, 0) - counts
    rank[order] = torch.arange(len(order)) - starts[syn.labels[order]]  # position within its class
    keep = rank < cols
    slot = syn.labels[keep] * cols + rank[keep]
    cells = torch.full((k * cols, *syn.image_shape), PAD_VALUE)
    filled = torch.zeros(k * cols, dtype=torch.bool)
    cells[slot] = pixels[keep]
    filled[slot] = True
    return cells, filled, cols


def grid_image(syn: SyntheticSet, per_class: int | None = None) -> tuple[Tensor, int]:
    """The class-by-IPC grid as one ``(3, K*(H+2)+2, cols*(W+2)+2)`` [0, 1] tensor, and ``cols``."""
    cells, _, cols = display_pixels(syn, per_class)
    return make_grid(cells, nrow=cols, padding=PADDING, pad_value=PAD_VALUE), cols


def _layout(syn: SyntheticSet, grid: Tensor, cols: int, names: list[str], title: str | None,
            zoom: int | None) -> GridLayout:
    _, gh, gw = grid.shape
    h = syn.image_shape[1]
    if zoom is not None and zoom < 1:
        raise ConfigError(f"--zoom must be at least 1, got {zoom}")
    if zoom is None:  # about 48 px per image, but keep the PNG under ~8000 px on a side
        zoom = max(1, math.ceil(48 / h))
        while zoom > 1 and max(gh, gw) * zoom > 8000:
            zoom -= 1
    row_px = (h + PADDING) * zoom
    font_px = min(13, max(6, int(row_px * 0.45)))
    longest = max((len(n) for n in names), default=1)
    left = 10 + int(0.62 * font_px * longest)
    top = 30 if title else 6
    needed = left + gw * zoom + 6
    width = max(needed, int(8 * len(title or "")) + 20)  # room for the title
    left += (width - needed) // 2  # centre a narrow grid under a long title
    return GridLayout(rows=syn.num_classes, cols=cols, zoom=zoom, left=left, top=top, width=width,
                      height=top + gh * zoom + 6, cell=(row_px, (syn.image_shape[2] + PADDING) * zoom))


def grid_figure(syn: SyntheticSet, per_class: int | None = None, title: str | None = None,
                zoom: int | None = None):
    """A matplotlib Figure of the grid (Agg canvas, no display needed).

    Args:
        syn: The set.
        per_class: Images per class (columns); default all.
        title: Title above the grid; default ``"{method} on {dataset}, IPC {ipc} (pixel space)"``.
        zoom: Integer upscaling; default about 48 px per image.

    Returns:
        ``(figure, layout)``; the figure is exactly ``layout.width x layout.height`` pixels at
        ``DPI`` dots per inch.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ConfigError("drawing grids needs matplotlib: pip install 'dsdistill[plots]'") from None

    grid, cols = grid_image(syn, per_class)
    names = syn.class_names or [str(c) for c in range(syn.num_classes)]
    if title is None:
        dataset = Path(syn.dataset.split(":", 1)[1]).name if ":" in syn.dataset else syn.dataset  # arrays:DIR
        title = f"{syn.method} on {dataset}, IPC {syn.ipc} (pixel space)"
    lay = _layout(syn, grid, cols, names, title, zoom)
    big = grid.repeat_interleave(lay.zoom, dim=1).repeat_interleave(lay.zoom, dim=2)
    rgb = big.permute(1, 2, 0).mul(255).round().to(torch.uint8).numpy()
    fig = Figure(figsize=(lay.width / DPI, lay.height / DPI), dpi=DPI, facecolor="white")
    FigureCanvasAgg(fig)
    # the pre-zoomed grid fills an axes of exactly its own size in pixels, so nearest-neighbour
    # drawing is 1:1 (exact values); an axes (not figimage) also keeps IPython's inline display
    # (bbox_inches="tight") from cropping images and labels differently
    h_px, w_px = rgb.shape[:2]
    ax = fig.add_axes((lay.left / lay.width, (lay.height - lay.top - h_px) / lay.height,
                       w_px / lay.width, h_px / lay.height))
    ax.imshow(rgb, interpolation="nearest", aspect="auto", resample=False)
    ax.set_axis_off()
    font_px = min(13, max(6, int(lay.cell[0] * 0.45)))
    for c, name in enumerate(names):
        y_center = lay.top + (PADDING + c * lay.cell[0] / lay.zoom + syn.image_shape[1] / 2) * lay.zoom
        fig.text((lay.left - 6) / lay.width, 1 - y_center / lay.height, name, ha="right", va="center",
                 fontsize=font_px * 72 / DPI)
    if title:
        fig.text(0.5, 1 - 15 / lay.height, title, ha="center", va="center", fontsize=11 * 72 / DPI * 1.2)
    return fig, lay


def save_grid(source: SyntheticSet | str | os.PathLike[str], output: str | os.PathLike[str], *,
              per_class: int | None = None, title: str | None = None, zoom: int | None = None,
              overwrite: bool = True) -> GridLayout:
    """Draw the grid of a set (or a dsdistill HDF5 file) and write it to ``output`` atomically.

    The image format follows the extension (``.png`` recommended; anything matplotlib's Agg
    canvas writes, e.g. ``.pdf``, ``.svg``, ``.jpg``).

    Returns:
        The layout (size and zoom) of the written image.

    Raises:
        ConfigError: Unsupported extension, existing output without ``overwrite``, bad ``per_class``.
        SyntheticFileError: ``source`` is not a readable image set.
    """
    from dsdistill.io import atomic_path, load_synthetic
    from dsdistill.io.atomic import check_overwrite

    out = Path(output)
    fmt = out.suffix.lower().lstrip(".")
    if fmt not in ("png", "pdf", "svg", "jpg", "jpeg", "eps", "ps", "tif", "tiff", "webp"):
        raise ConfigError(f"cannot tell the image format of {out}; give it a .png (or .pdf/.svg/.jpg) name")
    check_overwrite(out, overwrite)
    if str(out.parent) and not out.parent.is_dir():
        raise ConfigError(f"output directory {out.parent} does not exist; create it first")
    syn = source if isinstance(source, SyntheticSet) else load_synthetic(source)
    fig, lay = grid_figure(syn, per_class, title, zoom)
    with atomic_path(out, overwrite=overwrite) as tmp:
        fig.savefig(tmp, format=fmt, dpi=DPI, facecolor="white")
    return lay


__all__ = ["display_pixels", "grid_image", "grid_figure", "save_grid", "GridLayout"]
