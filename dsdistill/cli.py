"""The ``dsdistill`` command line: a thin click shell over the Python API.

Every user error (a :class:`~dsdistill.errors.DsdistillError`) is printed as one line
``error: ...`` on stderr with exit code 2 and no traceback.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from pathlib import Path
from typing import Any

import click
import yaml

from dsdistill.errors import ConfigError, DsdistillError


def _fail(message: str, code: int = 2) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def user_errors(fn):
    """Turn toolkit errors into one line and exit code 2; Ctrl-C into exit 130."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from dsdistill.condenser import Interrupted

        try:
            return fn(*args, **kwargs)
        except DsdistillError as exc:
            _fail(str(exc), exc.exit_code)
        except Interrupted as exc:
            _fail(f"interrupted; state saved to {exc}; rerun the same command with --resume to continue", 130)
        except KeyboardInterrupt:
            _fail("interrupted", 130)

    return wrapper


def _load_config(ctx: click.Context, param: click.Parameter, path: str | None) -> str | None:
    """Eager ``--config``: a YAML mapping of option names fills click's defaults; flags still win."""
    if not path:
        return path
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        _fail(f"cannot read config {path}: {exc}")
    if not isinstance(data, dict):
        _fail(f"config {path} must be a mapping of option names to values")
    valid = {p.name for p in ctx.command.params if p.name and p.name != "config"}
    data = {str(k).replace("-", "_"): v for k, v in data.items()}
    unknown = sorted(set(data) - valid)
    if unknown:
        _fail(f"unknown key(s) {', '.join(unknown)} in {path}; valid keys: {', '.join(sorted(valid))}")
    if "param" in data:
        params = data.pop("param")
        if not isinstance(params, dict):
            _fail(f"'param' in {path} must be a mapping of method settings")
        data["param"] = [f"{k}={json.dumps(v)}" for k, v in params.items()]
    ctx.default_map = {**(ctx.default_map or {}), **data}
    return path


config_option = click.option("--config", type=click.Path(dir_okay=False), is_eager=True, expose_value=False,
                             callback=_load_config, help="YAML file of option defaults (explicit flags win).")


def parse_params(items: tuple[str, ...], flag: str = "--param") -> dict[str, Any]:
    """``("lr_img=0.5", "init=noise")`` -> ``{"lr_img": 0.5, "init": "noise"}`` (values parsed as YAML)."""
    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"{flag} expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(package_name="dsdistill")
@click.option("-v", "--verbose", is_flag=True, help="Log progress details.")
def main(verbose: bool) -> None:
    """Condense datasets into tiny synthetic sets and evaluate them fairly."""
    from dsdistill.perf import tune_allocator

    tune_allocator()
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(message)s")


def common_data_options(fn):
    fn = click.option("--data-root", type=click.Path(file_okay=False), default=None,
                      help="Dataset folder (default: $DSDISTILL_DATA, ../shared/data, or the shipped MNIST).")(fn)
    fn = click.option("--download", is_flag=True, help="Let torchvision download missing datasets.")(fn)
    fn = click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu")(fn)
    fn = click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads.")(fn)
    fn = click.option("-q", "--quiet", is_flag=True, help="No progress bars.")(fn)
    fn = click.option("--deterministic", is_flag=True, help="Use PyTorch's deterministic algorithms only.")(fn)
    return fn


def _device(device: str) -> str:
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was given but no CUDA device is available; use --device cpu")
    return device


@main.command()
@config_option
@click.option("--method", "-m", required=True, help="Condenser name (see `dsdistill list`).")
@click.option("--dataset", "-d", default="mnist", help="Dataset name, arrays:DIR or imagefolder:DIR.")
@click.option("--ipc", type=int, default=10, help="Images per class.")
@click.option("--output", "-o", type=click.Path(dir_okay=False), required=True, help="HDF5 file to write.")
@click.option("--iterations", type=click.IntRange(min=1), default=None, help="Override the recipe's iterations.")
@click.option("--param", "-p", multiple=True, help="Method setting KEY=VALUE (repeatable).")
@click.option("--seed", type=int, default=0)
@click.option("--zca", is_flag=True, help="Condense in ZCA space (kornia, eps 0.1).")
@click.option("--overwrite", is_flag=True, help="Replace an existing output file.")
@click.option("--resume", is_flag=True, help="Continue from OUTPUT.ckpt if present.")
@click.option("--checkpoint-every", type=click.IntRange(min=0), default=50, help="Iterations between checkpoints.")
@click.option("--clip-model", default=None, help="hello: open_clip model name or config JSON (same as -p clip_model=).")
@click.option("--clip-weights", type=click.Path(dir_okay=False), default=None,
              help="hello: local weights file of the CLIP backbone; nothing is downloaded (same as -p clip_weights=).")
@common_data_options
@user_errors
def condense(method, dataset, ipc, output, iterations, param, seed, zca, overwrite, resume, checkpoint_every,
             clip_model, clip_weights, data_root, download, device, threads, quiet, deterministic):
    """Condense DATASET into IPC synthetic images per class and write OUTPUT (HDF5)."""
    from dsdistill.api import condense as run_condense

    params = parse_params(param)
    for key, value in (("clip_model", clip_model), ("clip_weights", clip_weights)):
        if value is not None:
            if key in params and params[key] != value:
                raise ConfigError(f"--{key.replace('_', '-')} and -p {key}= disagree; give one of them")
            params[key] = value
    syn = run_condense(method, dataset, ipc, output=output, iterations=iterations, params=params,
                       seed=seed, zca=zca, overwrite=overwrite, resume=resume, checkpoint_every=checkpoint_every,
                       data_root=data_root, download=download, device=_device(device), threads=threads,
                       progress=not quiet, deterministic=deterministic)
    if getattr(syn, "modality", "image") == "graph":
        return click.echo(f"wrote {output}: {syn.summary()}")
    seconds = syn.provenance.get("elapsed_seconds", 0)
    click.echo(f"wrote {output}: {syn.method} on {syn.dataset}, {syn.num_images} images "
               f"{tuple(syn.image_shape)}, {syn.storage_bytes()['total'] / 1024:.1f} KiB, {seconds:.1f} s")


@main.command()
@config_option
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--model", default=None,
              help="Student model(s), comma-separated [default: convnet; gin,gcn for graph sets].")
@click.option("--runs", type=click.IntRange(min=1), default=3, help="Students per model (seeds).")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Override the protocol's epochs.")
@click.option("--protocol", default=None,
              help="dc | tm | softlabel | infer | dbr (nrr) | hello | graph (default: what the file asks for).")
@click.option("--lr", type=float, default=None, help="Override the student learning rate.")
@click.option("--batch-size", type=click.IntRange(min=1), default=None)
@click.option("--seed", type=int, default=0)
@click.option("--no-baseline", is_flag=True, help="Skip the random-subset baseline.")
@click.option("--robustness", is_flag=True,
              help="Also train without augmentation and on hard labels (inputs of `compare`'s LRS/ARS).")
@click.option("--dataset", default=None, help="Dataset to test on (default: the file's).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None, help="Write the report here.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --json report.")
@click.option("--resume", is_flag=True, help="Continue from the checkpoint (JSON.ckpt, else FILE.eval.ckpt).")
@click.option("--checkpoint-every", type=click.IntRange(min=0), default=50,
              help="Epochs between checkpoints of the student in training, which also keep every finished "
                   "student (0: no checkpoints).")
@click.option("--teachers", type=click.Path(file_okay=False), default=None,
              help="softlabel: teachers directory (relabels the random subset; default: the one the file records).")
@click.option("--online-teacher", is_flag=True,
              help="softlabel: teachers label every batch during training (uses knowledge not in the file).")
@click.option("--full-acc", type=click.FloatRange(0, 1), default=None,
              help="softlabel: full-data hard-label accuracy (fraction) for HLR.")
@click.option("--full-epochs", type=click.IntRange(min=0), default=0,
              help="softlabel: also train on the full real training split for this many epochs (for HLR).")
@click.option("--clip-model", default=None,
              help="hello: open_clip model name or config JSON of the frozen backbone (default: the file's).")
@click.option("--clip-weights", type=click.Path(dir_okay=False), default=None,
              help="hello: local weights file of the frozen CLIP backbone (default: the path the file records).")
@click.option("--protocol-option", "protocol_option", multiple=True,
              help="infer/dbr/hello: override a recipe field KEY=VALUE (repeatable), e.g. alpha_dbr=0.5.")
@common_data_options
@user_errors
def evaluate(file, model, runs, epochs, protocol, lr, batch_size, seed, no_baseline, robustness, dataset, json_path,
             overwrite, resume, checkpoint_every, teachers, online_teacher, full_acc, full_epochs, clip_model,
             clip_weights, protocol_option, data_root, download, device, threads, quiet, deterministic):
    """Train fresh students on FILE and report test accuracy next to the random baseline."""
    from dsdistill.api import evaluate_file

    models = [m.strip() for m in (model or "").split(",") if m.strip()] or None
    report = evaluate_file(file, models=models, runs=runs, epochs=epochs, protocol=protocol, lr=lr,
                           batch_size=batch_size, seed=seed, baseline=not no_baseline, dataset=dataset,
                           json_path=json_path, data_root=data_root, download=download, device=_device(device),
                           threads=threads, progress=not quiet, deterministic=deterministic, robustness=robustness,
                           overwrite=overwrite, resume=resume, checkpoint_every=checkpoint_every,
                           teachers=teachers, online_teacher=online_teacher, full_acc=full_acc,
                           full_epochs=full_epochs, clip_model=clip_model, clip_weights=clip_weights,
                           protocol_options=parse_params(protocol_option, "--protocol-option"))
    from dsdistill import distributed

    if distributed.is_main():
        click.echo(report.table())
        if json_path:
            click.echo(f"report written to {json_path}")


@main.command()
@click.argument("file", type=click.Path(dir_okay=False))
@user_errors
def info(file):
    """Describe a dsdistill HDF5 file."""
    from dsdistill.io import describe

    click.echo(describe(file))


@main.command(name="list")
def list_() -> None:
    """List methods, datasets, models and evaluation protocols."""
    from dsdistill.api import catalogue

    for kind, names in catalogue().items():
        click.echo(f"{kind}: {', '.join(names)}")


from dsdistill.cli_tools import register as _register_tools  # noqa: E402

_register_tools(main)  # visualize, export, import, compare
from dsdistill.cli_teachers import register as _register_teachers  # noqa: E402
_register_teachers(main)  # teachers
from dsdistill.cli_prep import register as _register_prep  # noqa: E402
_register_prep(main)  # experts

if __name__ == "__main__":  # pragma: no cover
    main()
