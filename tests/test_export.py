"""Export/import: import(export(file)) restores the file exactly for every format; foreign
DC / MTT / DATM / DD-Ranking / DC-BENCH results import; bad input is one line, exit 2, no output."""

import argparse
import json

import h5py
import pytest
import torch
from click.testing import CliRunner

from dsdistill.cli import main
from dsdistill.errors import ConfigError, SyntheticFileError
from dsdistill.io import load_synthetic, save_synthetic
from dsdistill.io.export import FORMATS, export_file, export_set
from dsdistill.io.importers import import_file, import_set
from dsdistill.methods.coreset import RandomSelection
from dsdistill.synthetic import SoftLabels


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.output


def assert_clean_error(code, output, phrase):
    assert code == 2, output
    lines = [line for line in output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    assert phrase in lines[0], output


@pytest.fixture(scope="module")
def tiny_zca(tiny_name):
    from dsdistill.data import load_real

    return load_real(tiny_name, val_fraction=0.25, zca=True)


@pytest.fixture(scope="module")
def sets(tiny_real, tiny_zca):
    """Real-pixel (8-bit exact), optimised-looking with soft labels + lr, ZCA, and uneven sets."""
    pick = RandomSelection.from_settings("tiny", 3)
    plain = pick.condense(tiny_real, 3, progress=False)
    soft = pick.condense(tiny_real, 3, seed=1, progress=False)
    soft.method = "datm"
    soft.images = soft.images + 0.05 * torch.randn(soft.images.shape, generator=torch.Generator().manual_seed(0))
    soft.soft_labels = SoftLabels(torch.randn(12, 4, generator=torch.Generator().manual_seed(1)), "logits", 2.0, "t")
    soft.lr = 0.0123
    zca = pick.condense(tiny_zca, 3, progress=False)
    uneven = pick.condense(tiny_real, 3, seed=2, progress=False)
    keep = torch.tensor([0, 1, 2, 3, 4, 6, 7, 8, 9, 10])  # class 1 keeps 2 images, class 3 keeps 2
    uneven.images, uneven.labels = uneven.images[keep], uneven.labels[keep]
    shuffled = pick.condense(tiny_real, 2, seed=3, progress=False)
    order = torch.tensor([3, 0, 7, 1, 5, 2, 6, 4])  # not class-major
    shuffled.images, shuffled.labels = shuffled.images[order], shuffled.labels[order]
    return {"plain": plain, "soft": soft, "zca": zca, "uneven": uneven, "shuffled": shuffled}


def assert_same(back, ref):
    assert torch.equal(back.images, ref.images) and back.images.dtype == torch.float32
    assert torch.equal(back.labels, ref.labels)
    assert (back.soft_labels is None) == (ref.soft_labels is None)
    if ref.soft_labels is not None:
        assert torch.equal(back.soft_labels.values, ref.soft_labels.values)
        assert back.soft_labels.kind == ref.soft_labels.kind
        assert back.soft_labels.temperature == ref.soft_labels.temperature
    assert back.lr == ref.lr
    assert (back.space, back.mean, back.std, back.num_classes, back.ipc, back.method, back.dataset) == \
        (ref.space, ref.mean, ref.std, ref.num_classes, ref.ipc, ref.method, ref.dataset)
    assert back.class_names == ref.class_names
    if ref.zca is not None:
        for key in ("mean", "matrix", "inverse"):
            assert torch.equal(back.zca[key], ref.zca[key])


@pytest.mark.parametrize("name,fmt", [(n, f) for n in ("plain", "soft", "zca") for f in FORMATS]
                         + [("shuffled", "png"), ("shuffled", "ddranking")])
def test_round_trip_is_exact(name, fmt, sets, tmp_path):
    path = tmp_path / "set.h5"
    save_synthetic(sets[name], path)
    ref = load_synthetic(path)
    res = export_file(path, tmp_path / "out", fmt)
    assert (tmp_path / "out").is_dir() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert any(f.endswith("meta.json") for f in res.files)
    back = import_set(tmp_path / "out", fmt)
    assert_same(back, ref)
    out = tmp_path / "back.h5"
    import_file(tmp_path / "out", fmt, out)
    assert_same(load_synthetic(out), ref)


def test_png_is_lossless_for_real_pixels_and_flags_optimised_images(sets, tmp_path):
    res = export_set(sets["plain"], tmp_path / "plain", "png")
    assert not any("images_exact.pt" in f for f in res.files) and not res.notes
    pngs = sorted(f for f in res.files if f.endswith(".png"))
    assert len(pngs) == 12 and pngs[0].startswith("000_class0/")
    from dsdistill.io.interop import read_png

    first = read_png(tmp_path / "plain" / pngs[0])
    assert first.dtype == torch.uint8 and tuple(first.shape) == (1, 16, 16)
    expected = sets["plain"].to_pixels()[0].clamp(0, 1).mul(255).round().to(torch.uint8)
    assert torch.equal(first, expected)
    res = export_set(sets["soft"], tmp_path / "soft", "png")
    assert "images_exact.pt" in res.files and "not exactly representable" in res.notes[0]


def test_layouts_match_the_consumers(sets, tmp_path):
    export_set(sets["plain"], tmp_path / "bench", "dcbench")
    (ipc_dir,) = (tmp_path / "bench" / "distilled_results" / "random").glob("*/IPC3")
    tiny = ipc_dir.parent.name
    images = torch.load(ipc_dir / f"{tiny}_IPC3_normalize_images.pt", weights_only=True)
    assert torch.equal(images, sets["plain"].images)
    sets["plain"].method = "dm"
    try:
        export_set(sets["plain"], tmp_path / "dm", "dcbench")
    finally:
        sets["plain"].method = "random"
    res = torch.load(tmp_path / f"dm/distilled_results/DM/{tiny}/IPC3/res_DM_{tiny}_ConvNet_3ipc.pt",
                     weights_only=True)
    assert torch.equal(res["data"][-1][0], sets["plain"].images)
    export_set(sets["soft"], tmp_path / "tm", "dcbench")
    tm_dir = tmp_path / "tm" / "distilled_results" / "TM" / tiny / "IPC3"
    assert {"images_best.pt", "labels_best.pt", "lr_best.pt"} <= {p.name for p in tm_dir.iterdir()}
    export_set(sets["shuffled"], tmp_path / "ddr", "ddranking")
    labels = torch.load(tmp_path / "ddr" / "labels.pt", weights_only=True)
    assert torch.equal(labels, torch.arange(4).repeat_interleave(2))  # class-major, as DD-Ranking implies
    meta = json.loads((tmp_path / "ddr" / "meta.json").read_text())
    assert meta["ddranking"]["config"]["ipc"] == 2 and meta["space"] == "normalized"


def test_ddranking_refuses_uneven_ipc(sets, tmp_path):
    with pytest.raises(ConfigError, match="same IPC in every class"):
        export_set(sets["uneven"], tmp_path / "x", "ddranking")
    assert not list(tmp_path.iterdir())
    export_set(sets["uneven"], tmp_path / "y", "pt")  # other formats take it
    assert_same(import_set(tmp_path / "y", "pt"), sets["uneven"])


def mnist_like(n_per_class=2):
    g = torch.Generator().manual_seed(0)
    return torch.randn(10 * n_per_class, 1, 28, 28, generator=g), torch.arange(10).repeat_interleave(n_per_class)


def test_dc_mtt_datm_results_import(tmp_path):
    img, lab = mnist_like()
    torch.save({"data": [[img * 0, lab], [img, lab]], "accs_all_exps": {"ConvNet": [0.9]}}, tmp_path / "res.pt")
    syn = import_set(tmp_path / "res.pt", "dc", dataset="mnist", ipc=2)
    assert torch.equal(syn.images, img) and torch.equal(syn.labels, lab)  # the last entry
    assert (syn.space, syn.mean, syn.std, syn.method, syn.protocol) == ("normalized", (0.1307,), (0.3081,), "dc", "dc")
    assert syn.class_names[:2] == ["0", "1"]

    mtt = tmp_path / "mtt"
    mtt.mkdir()
    torch.save(img, mtt / "images_best.pt")
    torch.save(lab, mtt / "labels_best.pt")
    torch.save(img + 1, mtt / "images_100.pt")
    syn = import_set(mtt, "mtt", dataset="mnist")
    assert torch.equal(syn.images, img) and syn.lr is None and syn.protocol == "tm"

    datm = tmp_path / "datm" / "Normal"
    datm.mkdir(parents=True)
    logits = torch.randn(20, 10, generator=torch.Generator().manual_seed(1)) + 4 * torch.nn.functional.one_hot(lab, 10)
    torch.save(img, datm / "images_best.pt")
    torch.save(logits, datm / "labels_best.pt")
    torch.save(torch.tensor(0.01, requires_grad=True), datm / "lr_best.pt")
    out = tmp_path / "datm.h5"
    code, output = run("import", tmp_path / "datm", "--format", "datm", "--dataset", "mnist", "--ipc", 2, "-o", out)
    assert code == 0, output
    syn = load_synthetic(out)
    assert torch.equal(syn.labels, lab) and torch.equal(syn.soft_labels.values, logits)
    assert syn.soft_labels.kind == "logits" and syn.lr == pytest.approx(0.01) and syn.protocol == "tm"
    assert syn.provenance["import"]["format"] == "datm"


def test_foreign_pixels_and_zca(tiny_name, tmp_path):
    from dsdistill.data import load_real

    tiny_zca = load_real(tiny_name, zca=True)  # what the importer (and `evaluate`) fit
    img = torch.rand(8, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    lab = torch.arange(4).repeat_interleave(2)
    (tmp_path / "px").mkdir()
    torch.save(img, tmp_path / "px" / "images.pt")
    syn = import_set(tmp_path / "px", "ddranking", dataset=tiny_name, space="pixel")  # labels implied
    assert torch.equal(syn.labels, lab) and syn.space == "normalized"
    assert torch.allclose(syn.to_pixels(), img, atol=1e-6)
    zimg = tiny_zca.zca(img)
    (tmp_path / "z").mkdir()
    torch.save(zimg, tmp_path / "z" / "images_best.pt")
    torch.save(lab, tmp_path / "z" / "labels_best.pt")
    torch.save(img, tmp_path / "z" / "images_zca_best.pt")  # MTT's inverse-ZCA copy
    syn = import_set(tmp_path / "z", "mtt", dataset=tiny_name, space="zca")
    assert syn.space == "zca" and torch.equal(syn.images, zimg)
    assert torch.allclose(syn.to_pixels(), img, atol=1e-4)
    assert any("images_zca" in n for n in syn.provenance["import"]["notes"])
    assert "--space zca" in " ".join(import_set(tmp_path / "z", "mtt", dataset=tiny_name).provenance["import"]["notes"])


def test_foreign_image_folder(tiny_name, tiny_real, tmp_path):
    from PIL import Image

    q = torch.randint(0, 256, (8, 16, 16), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    for i, name in enumerate(["a_sea_lion", "b", "c", "d"]):  # sorted, like ImageFolder
        (tmp_path / name).mkdir()
        for j in range(2):
            Image.fromarray(q[2 * i + j].numpy()).save(tmp_path / name / f"{j}.png")
    syn = import_set(tmp_path, "png", dataset=tiny_name)
    assert torch.equal(syn.labels, torch.arange(4).repeat_interleave(2)) and syn.class_names[0] == "a_sea_lion"
    mean, std = torch.tensor(tiny_real.mean), torch.tensor(tiny_real.std)
    assert torch.equal(syn.images, (q.unsqueeze(1).float().div(255) - mean) / std)


def test_foreign_dcbench_tree(tmp_path):
    img, lab = mnist_like(3)
    d = tmp_path / "distilled_results" / "DM" / "MNIST" / "IPC3"
    d.mkdir(parents=True)
    torch.save({"data": [[img, lab]]}, d / "res_DM_MNIST_ConvNet_3ipc.pt")
    t = tmp_path / "distilled_results" / "TM" / "MNIST" / "IPC3"
    t.mkdir(parents=True)
    torch.save(img + 1, t / "images_best.pt")
    torch.save(lab, t / "labels_best.pt")
    with pytest.raises(SyntheticFileError, match="found 2"):
        import_set(tmp_path, "dcbench", dataset="mnist", ipc=3)
    syn = import_set(tmp_path, "dcbench", dataset="mnist", ipc=3, method="dm")
    assert torch.equal(syn.images, img) and syn.method == "dm"
    assert torch.equal(import_set(t, "dcbench", dataset="mnist").images, img + 1)


def test_pickle_is_refused(tmp_path):
    img, lab = mnist_like()
    torch.save({"data": [[img, lab]], "args": argparse.Namespace(lr=1)}, tmp_path / "res.pt")
    with pytest.raises(SyntheticFileError, match="needs pickle"):
        import_set(tmp_path / "res.pt", "dc", dataset="mnist")


@pytest.mark.parametrize("case,phrase", [
    ("missing", "does not exist"),
    ("foreign", "not a dsdistill file"),
    ("format", "unknown export format 'zip'"),
    ("uneven", "same IPC in every class"),
    ("exists", "exists; pass --overwrite"),
])
def test_export_cli_errors(case, phrase, sets, tmp_path):
    src = tmp_path / "set.h5"
    save_synthetic(sets["uneven" if case == "uneven" else "plain"], src)
    if case == "foreign":
        src = tmp_path / "foreign.h5"
        with h5py.File(src, "w") as f:
            f["x"] = [1, 2, 3]
    out = tmp_path / "out"
    if case == "exists":
        out.mkdir()
    before = sorted(p.name for p in tmp_path.iterdir())
    code, output = run("export", tmp_path / "nope.h5" if case == "missing" else src,
                       "--to", "zip" if case == "format" else "ddranking", "-o", out)
    assert_clean_error(code, output, phrase)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.parametrize("args,phrase", [
    (["--format", "dc", "--dataset", "mnist"], "does not exist"),
    (["--format", "tar", "--dataset", "mnist"], "unknown import format 'tar'"),
    (["--format", "dc"], "--dataset is required"),
    (["--format", "dc", "--dataset", "mnist", "--space", "lab"], "unknown space 'lab'"),
    (["--format", "dc", "--dataset", "cifar10"], "check --dataset"),
])
def test_import_cli_errors(args, phrase, tmp_path):
    img, lab = mnist_like()
    src = tmp_path / "res.pt"
    if "does not exist" not in phrase:
        torch.save({"data": [[img, lab]]}, src)
    code, output = run("import", src, *args, "-o", tmp_path / "o.h5")
    assert_clean_error(code, output, phrase)
    assert not (tmp_path / "o.h5").exists()


def test_cli_export_prints_notes(sets, tmp_path):
    src = tmp_path / "soft.h5"
    save_synthetic(sets["soft"], src)
    code, output = run("export", src, "--to", "png", "-o", tmp_path / "png")
    assert code == 0 and "note: images" in output
    code, output = run("export", src, "--to", "png", "-o", tmp_path / "png", "--overwrite")
    assert code == 0, output
