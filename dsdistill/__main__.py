"""``python -m dsdistill`` (and ``torchrun -m dsdistill``) runs the CLI."""

from dsdistill.cli import main

main(prog_name="dsdistill")
