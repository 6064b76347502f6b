"""CLI commands that work on finished files: ``visualize``, ``export``, ``import``, ``compare``.

Registered on the main group by :func:`register` (called at the bottom of :mod:`dsdistill.cli`).
Each command is wrapped with ``user_errors``: bad input prints one ``error: ...`` line, exits
with code 2 and leaves no output behind. Format names and numbers are therefore checked by the
library (one-line ConfigError) rather than by click types, whose errors print a usage block.
"""

from __future__ import annotations

import click


def register(main: click.Group) -> None:
    """Add the four commands to ``main``."""
    from dsdistill.cli import user_errors
    from dsdistill.io.export import FORMATS as EXPORT_FORMATS
    from dsdistill.io.readers import FORMATS as IMPORT_FORMATS

    @main.command()
    @click.argument("file", type=click.Path(dir_okay=False))
    @click.option("--output", "-o", type=click.Path(dir_okay=False), required=True,
                  help="Image to write (.png; .pdf/.svg/.jpg also work).")
    @click.option("--per-class", type=int, default=None,
                  help="Images per class to show (default: all).")
    @click.option("--title", default=None, help="Title above the grid (default: method, dataset, IPC).")
    @click.option("--zoom", type=int, default=None, help="Integer upscaling (default ~48 px/image).")
    @click.option("--overwrite", is_flag=True, help="Replace an existing output file.")
    @user_errors
    def visualize(file, output, per_class, title, zoom, overwrite):
        """Draw FILE's images as a class-by-IPC grid in pixel space (rows labelled by class)."""
        from dsdistill.visualize import save_grid

        lay = save_grid(file, output, per_class=per_class, title=title, zoom=zoom, overwrite=overwrite)
        click.echo(f"wrote {output}: {lay.rows} classes x {lay.cols} images, {lay.width}x{lay.height} px")

    @main.command()
    @click.argument("file", type=click.Path(dir_okay=False))
    @click.option("--to", "to", required=True, help=f"Target format: {' | '.join(EXPORT_FORMATS)}.")
    @click.option("--output", "-o", type=click.Path(file_okay=False), required=True, help="Directory to create.")
    @click.option("--overwrite", is_flag=True, help="Replace an existing output directory.")
    @user_errors
    def export(file, to, output, overwrite):
        """Export FILE as an ImageFolder of PNGs, plain tensors, DD-Ranking inputs or DC-BENCH's layout."""
        from dsdistill.io.export import export_file

        res = export_file(file, output, to, overwrite=overwrite)
        click.echo(f"wrote {res.directory} ({to}): {len(res.files)} files")
        for note in res.notes:
            click.echo(f"note: {note}")

    @main.command(name="import")
    @click.argument("src", type=click.Path())
    @click.option("--format", "fmt", required=True, help=f"Source format: {' | '.join(IMPORT_FORMATS)}.")
    @click.option("--dataset", "-d", default=None, help="Dataset the set was distilled from (needed unless SRC "
                  "has a dsdistill meta.json).")
    @click.option("--ipc", type=int, default=None, help="Images per class (checked; default: "
                  "inferred).")
    @click.option("--space", default="normalized", show_default=True,
                  help="Space the source tensors are in: normalized | zca | pixel (foreign sources cannot say).")
    @click.option("--method", default=None, help="Method name to record (default: from the format).")
    @click.option("--zca-eps", type=float, default=0.1, help="ZCA regulariser for --space zca.")
    @click.option("--cifar10-stats", is_flag=True, help="CIFAR-100 normalised with CIFAR-10 statistics "
                  "(MTT/DATM quirk).")
    @click.option("--data-root", type=click.Path(file_okay=False), default=None, help="Dataset folder.")
    @click.option("--output", "-o", type=click.Path(dir_okay=False), required=True, help="HDF5 file to write.")
    @click.option("--overwrite", is_flag=True, help="Replace an existing output file.")
    @user_errors
    def import_(src, fmt, dataset, ipc, space, method, zca_eps, cifar10_stats, data_root, output, overwrite):
        """Import a published distilled set (DC, MTT, DATM, DD-Ranking, DC-BENCH, .pt, PNG) into HDF5."""
        from dsdistill.io.importers import import_file

        syn = import_file(src, fmt, output, overwrite=overwrite, dataset=dataset, ipc=ipc, space=space,
                          method=method, zca_eps=zca_eps, cifar10_stats=cifar10_stats, data_root=data_root)
        labels = "hard + soft" if syn.soft_labels is not None else "hard"
        click.echo(f"wrote {output}: {syn.method} on {syn.dataset}, {syn.num_images} images "
                   f"{tuple(syn.image_shape)}, IPC {syn.ipc}, {syn.space} space, {labels} labels"
                   + (f", lr {syn.lr:.4g}" if syn.lr is not None else ""))
        for note in syn.provenance.get("import", {}).get("notes", []):
            click.echo(f"note: {note}")

    @main.command()
    @click.argument("reports", nargs=-1, required=True, type=click.Path(dir_okay=False))
    @click.option("--output", "-o", type=click.Path(dir_okay=False), required=True,
                  help="Markdown table to write; the CSV goes beside it.")
    @click.option("--full-acc", multiple=True, help="Full-data accuracy DATASET[:MODEL]=FRACTION for LRS "
                  "(repeatable).")
    @click.option("--overwrite", is_flag=True, help="Replace existing tables.")
    @user_errors
    def compare(reports, output, full_acc, overwrite):
        """Leaderboard of evaluation REPORTS (JSON): accuracy, random baseline, storage, LRS/ARS."""
        from dsdistill.compare import compare_files, parse_full_acc

        rows = compare_files(list(reports), output, full_acc=parse_full_acc(full_acc), overwrite=overwrite)
        from pathlib import Path

        click.echo(f"wrote {output} and {Path(output).with_suffix('.csv')}: {len(rows)} rows")
