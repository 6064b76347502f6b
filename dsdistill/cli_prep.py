"""CLI commands that prepare what some condensers need: ``experts`` (trajectory buffers).

Registered on the main group by :func:`register` (called at the bottom of :mod:`dsdistill.cli`).
Bad input prints one ``error: ...`` line and exits with code 2; names and the output directory are
checked before any data is loaded.
"""

from __future__ import annotations

import click


def register(main: click.Group) -> None:
    """Add ``experts`` to ``main``."""
    from dsdistill.cli import _device, common_data_options, config_option, parse_params, user_errors

    @main.command()
    @config_option
    @click.option("--dataset", "-d", default="mnist", help="Dataset name, arrays:DIR or imagefolder:DIR.")
    @click.option("--model", default="convnet", help="Expert network (see `dsdistill list`).")
    @click.option("--model-option", multiple=True, help="build_model option KEY=VALUE, e.g. width=64 (repeatable).")
    @click.option("--num-experts", "-n", type=int, default=10, help="Number of experts (N).")
    @click.option("--epochs", "-e", type=int, default=50, help="Training epochs per expert.")
    @click.option("--recipe", default="mtt", help="mtt | ftd | ast (MATCHING.md §3.1, §4.1, §5.1).")
    @click.option("--output", "-o", type=click.Path(), required=True, help="Directory for the expert files.")
    @click.option("--dtype", default="float32", help="Snapshot storage: float32 | float16.")
    @click.option("--keep-epochs", type=int, default=None,
                  help="Store only epochs 0..K (K = max_start_epoch + expert_epochs suffices) [default: all].")
    @click.option("--lr", type=float, default=None, help="Override the recipe's learning rate.")
    @click.option("--batch-size", type=int, default=None, help="Override the recipe's batch size.")
    @click.option("--train-per-class", type=int, default=None,
                  help="Budget mode: train on a fixed random subset of this many images per class [default: all].")
    @click.option("--zca", is_flag=True, help="Train in ZCA space (kornia, eps 0.1), as MTT does on CIFAR.")
    @click.option("--seed", type=int, default=0, help="Run seed; expert i derives its seeds from (seed, i).")
    @click.option("--resume", is_flag=True, help="Continue an interrupted run in OUTPUT.")
    @click.option("--overwrite", is_flag=True, help="Replace the experts already in OUTPUT.")
    @click.option("--checkpoint-every", type=click.IntRange(min=0), default=1,
                  help="Epochs between checkpoints of the expert in progress (0: none).")
    @common_data_options
    @user_errors
    def experts(dataset, model, model_option, num_experts, epochs, recipe, output, dtype, keep_epochs, lr, batch_size,
                train_per_class, zca, seed, resume, overwrite, checkpoint_every, data_root, download, device, threads, quiet,
                deterministic):
        """Train N expert networks and store their per-epoch parameters in OUTPUT/expert_*.h5.

        Under `torchrun --nproc_per_node K -m dsdistill experts ...` the experts are split across
        the K processes; the files equal those of a single-process run with the same seed.
        """
        import dsdistill.models  # noqa: F401
        from dsdistill import distributed
        from dsdistill.data import load_real
        from dsdistill.data.catalogue import PREFIXES, canonical_name
        from dsdistill.errors import ConfigError
        from dsdistill.experts import get_recipe, train_experts
        from dsdistill.experts.run import prepare_output
        from dsdistill.perf import set_deterministic, set_threads, tune_allocator
        from dsdistill.registry import DATASETS, MODELS

        rec = get_recipe(recipe)
        MODELS.get(model)
        key = canonical_name(dataset)
        if not key.startswith(PREFIXES):
            DATASETS.get(key)
        if num_experts < 1 or epochs < 1:
            raise ConfigError("--num-experts and --epochs must be at least 1")
        if dtype not in ("float32", "float16"):
            raise ConfigError(f"--dtype must be float32 or float16, got {dtype!r}")
        if keep_epochs is not None and not 1 <= keep_epochs <= epochs:
            raise ConfigError(f"--keep-epochs must be in [1, --epochs={epochs}], got {keep_epochs}")
        if train_per_class is not None and train_per_class < 1:
            raise ConfigError(f"--train-per-class must be at least 1, got {train_per_class}")
        if batch_size is not None and batch_size < 1 or lr is not None and not lr > 0:
            raise ConfigError("--lr must be positive and --batch-size at least 1")
        kwargs = parse_params(model_option)
        device = _device(device)
        set_threads(threads)
        set_deterministic(deterministic)
        tune_allocator()
        distributed.init(device)
        prepare_output(output, resume=resume, overwrite=overwrite, create=False)  # before loading any data
        real = load_real(key, data_root, download=download, zca=zca)
        store = train_experts(real, output, num_experts=num_experts, epochs=epochs, recipe=rec, model=model,
                              model_kwargs=kwargs, keep_epochs=keep_epochs, seed=seed, dtype=dtype, resume=resume,
                              overwrite=overwrite, checkpoint_every=checkpoint_every, device=device,
                              progress=not quiet, recipe_overrides={"lr": lr, "batch_size": batch_size},
                              train_per_class=train_per_class)
        if distributed.is_main():
            accs = [i["test_accuracy"] for i in store.infos]
            mean = sum(accs) / len(accs)
            std = (sum((a - mean) ** 2 for a in accs) / len(accs)) ** 0.5
            click.echo(f"wrote {store.num_experts} {rec.name} experts to {output}: {store.model} on {store.dataset} "
                       f"({store.space}), epochs {store.stored_epochs[0]}..{store.stored_epochs[-1]} stored as "
                       f"{store.dtype}, test accuracy {100 * mean:.2f} ± {100 * std:.2f}%")
