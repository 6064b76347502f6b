"""The ``dsdistill teachers`` command: train (or import) a teacher committee into a directory.

Registered on the main group by :func:`register` (one line at the bottom of :mod:`dsdistill.cli`).
Under ``torchrun`` each process trains its share of the models (one model per process when there
are as many processes as models); rank 0 writes ``committee.json`` and prints the table.
"""

from __future__ import annotations

import click


def _parse_checkpoints(items: tuple[str, ...]) -> dict[str, str]:
    from dsdistill.errors import ConfigError

    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise ConfigError(f"--from-checkpoint expects NAME=PATH, got {item!r}")
        out[name.strip()] = path.strip()
    return out


def register(main: click.Group) -> None:
    """Add ``teachers`` to ``main``."""
    from dsdistill.cli import _device, config_option, user_errors

    @main.command()
    @config_option
    @click.option("--dataset", "-d", default="mnist", help="Dataset name, arrays:DIR or imagefolder:DIR.")
    @click.option("--models", default="resnet18_bn,mobilenetv2,shufflenetv2,densenet121,resnet50",
                  help="Comma-separated registered model names, one teacher each (use BatchNorm models: "
                       "SRe2L/CV-DD match BN statistics).")
    @click.option("--epochs", type=int, default=200, help="Training epochs per teacher.")
    @click.option("--output", "-o", type=click.Path(file_okay=False), required=True, help="Teachers directory.")
    @click.option("--optimizer", type=click.Choice(["sgd", "adam", "adamw"]), default="sgd")
    @click.option("--lr", type=float, default=0.1, help="Initial learning rate (cosine-annealed).")
    @click.option("--weight-decay", type=float, default=5e-4)
    @click.option("--batch-size", type=click.IntRange(min=1), default=128)
    @click.option("--train-per-class", type=click.IntRange(min=0), default=0,
                  help="Budget knob: train on a seeded random subset of this many images per class (0 = all).")
    @click.option("--from-checkpoint", "from_checkpoint", multiple=True,
                  help="NAME=PATH: import a local state_dict as teacher NAME instead of training (repeatable).")
    @click.option("--resume", is_flag=True, help="Skip finished teachers, continue partial ones.")
    @click.option("--overwrite", is_flag=True, help="Retrain teachers that already exist.")
    @click.option("--seed", type=int, default=0)
    @click.option("--zca", is_flag=True, help="Train in ZCA space (the condensers must then use --zca too).")
    @click.option("--data-root", type=click.Path(file_okay=False), default=None)
    @click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu")
    @click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads.")
    @click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
    @user_errors
    def teachers(dataset, models, epochs, output, optimizer, lr, weight_decay, batch_size, train_per_class,
                 from_checkpoint, resume, overwrite, seed, zca, data_root, device, threads, quiet):
        """Train a teacher committee on DATASET; validation accuracy becomes each teacher's prior."""
        from dsdistill import distributed
        from dsdistill.api import _registries
        from dsdistill.data import load_real
        from dsdistill.errors import ConfigError
        from dsdistill.perf import set_threads
        from dsdistill.registry import MODELS
        from dsdistill.teachers import TeacherRecipe, train_teachers

        _registries()
        names = [m.strip() for m in models.split(",") if m.strip()]
        checkpoints = _parse_checkpoints(from_checkpoint)
        for name in names + list(checkpoints):
            MODELS.get(name)
        if epochs < 1:
            raise ConfigError(f"--epochs must be >= 1, got {epochs}")
        device = _device(device)
        set_threads(threads)
        distributed.init(device)
        real = load_real(dataset, data_root, zca=zca)
        recipe = TeacherRecipe(epochs=epochs, optimizer=optimizer, lr=lr, weight_decay=weight_decay,
                               batch_size=batch_size, momentum=0.9, train_per_class=train_per_class)
        records = train_teachers(real, names, output, recipe=recipe, seed=seed, device=device, resume=resume,
                                 overwrite=overwrite, checkpoints=checkpoints, progress=not quiet)
        if distributed.is_main():
            click.echo("| teacher | kind | epochs | val acc (prior) | test acc (reported only) |")
            click.echo("|---|---|---|---|---|")
            for r in records:
                click.echo(f"| {r['name']} | {r['kind']} | {r['epochs']} | {100 * r['val_accuracy']:.2f} | "
                           f"{100 * r['test_accuracy']:.2f} |")
            click.echo(f"wrote {len(records)} teacher(s) to {output}")
