"""The class-by-IPC grid: size, pixel-space values (normalisation and ZCA undone), CLI."""

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from dsdistill.cli import main
from dsdistill.errors import ConfigError
from dsdistill.io import save_synthetic
from dsdistill.synthetic import SyntheticSet
from dsdistill.visualize import PADDING, display_pixels, grid_image, save_grid


def make_set(k=4, ipc=3, c=1, size=16, space="normalized", zca=None):
    """A set whose pixel-space images are known: cell (class, i) is a flat grey of known level."""
    levels = torch.linspace(0, 1, k * ipc)
    pixels = levels.view(-1, 1, 1, 1).expand(k * ipc, c, size, size).clone()
    mean, std = (0.3,) * c, (0.2,) * c
    if space == "normalized":
        images = (pixels - 0.3) / 0.2
    elif space == "zca":
        images = zca(pixels)
    else:
        images = pixels
    syn = SyntheticSet(images=images.float(), labels=torch.arange(k).repeat_interleave(ipc), num_classes=k,
                       method="test", dataset="toy", ipc=ipc, space=space, mean=mean, std=std,
                       zca=None if zca is None else zca.state(), class_names=[f"cls{i}" for i in range(k)])
    return syn, pixels


def test_display_pixels_undo_normalisation():
    syn, pixels = make_set()
    cells, filled, cols = display_pixels(syn)
    assert cols == 3 and bool(filled.all())
    assert torch.allclose(cells, pixels, atol=1e-6)
    syn.images = syn.images * 10  # far outside [0, 1] in pixel space: clamped for display only
    assert float(display_pixels(syn)[0].max()) == 1.0 and float(display_pixels(syn)[0].min()) == 0.0


def test_display_pixels_undo_zca(tiny_real):
    from dsdistill.augment.zca import ZCA

    zca = ZCA(eps=0.1).fit(tiny_real.train_images[:64].clamp(0, 1))
    syn, pixels = make_set(space="zca", zca=zca)
    assert torch.allclose(display_pixels(syn)[0], pixels, atol=1e-4)


def test_per_class_and_uneven_classes():
    syn, pixels = make_set(k=3, ipc=4)
    cells, filled, cols = display_pixels(syn, per_class=2)
    assert cols == 2 and cells.shape[0] == 6
    assert torch.allclose(cells[2], pixels[4], atol=1e-6)  # row 1 starts with class 1's first image
    keep = torch.tensor([0, 4, 5, 6, 7, 8])  # class 0 has one image, class 2 four
    syn.images, syn.labels = syn.images[keep], syn.labels[keep]
    cells, filled, cols = display_pixels(syn)
    assert cols == 4 and filled.tolist()[:4] == [True, False, False, False]
    with pytest.raises(ConfigError, match="at least 1"):
        display_pixels(syn, per_class=0)


@pytest.mark.parametrize("k,ipc,c", [(4, 3, 1), (2, 5, 3)])
def test_png_size_and_pixel_values(k, ipc, c, tmp_path):
    syn, pixels = make_set(k=k, ipc=ipc, c=c)
    grid, cols = grid_image(syn)
    assert tuple(grid.shape) == (3, k * (16 + PADDING) + PADDING, ipc * (16 + PADDING) + PADDING)
    out = tmp_path / "grid.png"
    lay = save_grid(syn, out)
    img = np.asarray(Image.open(out).convert("RGB"))
    assert img.shape == (lay.height, lay.width, 3)
    assert (lay.rows, lay.cols) == (k, ipc) and lay.cell == ((16 + PADDING) * lay.zoom,) * 2
    for cls in range(k):
        for j in range(ipc):  # the centre of every cell shows its exact 8-bit level, in pixel space
            y = lay.top + (PADDING + cls * (16 + PADDING) + 8) * lay.zoom
            x = lay.left + (PADDING + j * (16 + PADDING) + 8) * lay.zoom
            want = round(float(pixels[cls * ipc + j, 0, 0, 0]) * 255)
            assert abs(int(img[y, x, 0]) - want) <= 1, (cls, j)
    big = grid.repeat_interleave(lay.zoom, 1).repeat_interleave(lay.zoom, 2)
    big = big.permute(1, 2, 0).mul(255).round().to(torch.uint8).numpy()
    region = img[lay.top: lay.top + big.shape[0], lay.left: lay.left + big.shape[1]]
    assert np.array_equal(region, big)  # drawn 1:1, nearest-neighbour: every pixel exact
    bigger = save_grid(make_set(k=k + 2, ipc=ipc + 1, c=c)[0], tmp_path / "b.png", zoom=lay.zoom)
    assert bigger.height - lay.height == 2 * (16 + PADDING) * lay.zoom


def test_cli_visualize(tiny_real, tmp_path):
    syn, _ = make_set()
    path = tmp_path / "s.h5"
    save_synthetic(syn, path)
    result = CliRunner().invoke(main, ["visualize", str(path), "-o", str(tmp_path / "g.png"), "--per-class", "2"])
    assert result.exit_code == 0, result.output
    assert "4 classes x 2 images" in result.output and (tmp_path / "g.png").stat().st_size > 0
    for args, phrase in [([str(tmp_path / "nope.h5"), "-o", str(tmp_path / "x.png")], "does not exist"),
                         ([str(path), "-o", str(tmp_path / "x.txt")], "cannot tell the image format"),
                         ([str(path), "-o", str(tmp_path / "x.png"), "--per-class", "0"], "at least 1")]:
        result = CliRunner().invoke(main, ["visualize", *args])
        assert result.exit_code == 2 and result.output.startswith("error: ") and phrase in result.output
        assert len(result.output.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.png", "s.h5"]
