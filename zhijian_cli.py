"""The `zhijian` command, composed from the commands of the three packages.

The core (`zhijian/cli.py`: score, export) sits below `training/cli.py` (train, pretrain, evaluate,
calibrate, data) and `serving/cli.py` (serve); only this module sees all three, so no package
imports upward.
"""

import typer

from serving.cli import app as serving_commands
from training.cli import app as training_commands
from zhijian.cli import app as core_commands

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Zhijian 质检: quality inspection of customer-service chats.")
for commands in (training_commands, core_commands, serving_commands):
    app.add_typer(commands)  # no name: the commands join `zhijian` itself (`zhijian train`, not `zhijian training train`)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
