"""The serving side of the `zhijian` command: `zhijian serve`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer
from serving.state import serving_settings
from zhijian.cli import DEFAULT_MODEL, ModelOption, fail, setup_logging
from zhijian.config import ConfigError, load_config, parse_overrides

app = typer.Typer()
LOOPBACK = ("127.0.0.1", "localhost", "::1")


@app.command()
def serve(
    model: ModelOption = DEFAULT_MODEL,
    host: Annotated[Optional[str], typer.Option(help="Default: the model's serving.host (127.0.0.1).")] = None,
    port: Annotated[Optional[int], typer.Option(help="Default: the model's serving.port.")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto, cpu or cuda. Default: the model's serving.device.")] = None,
    template: Annotated[Optional[Path], typer.Option(help="Scoring template (default: configs/scoring/default.yaml); re-read when the file changes.")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Override a serving key: serving.queue_size=128 (repeatable).")] = None,
) -> None:
    """Serve the API (/v1/score, /v1/utterances, /v1/model, /healthz, /readyz, /metrics) and the inspector page at /."""
    import uvicorn

    from serving.app import create_app
    from zhijian.model import ModelFolderError
    from zhijian.template import load_template

    try:
        config = load_config(model)  # the one read of the folder's zhijian.yaml
    except ConfigError as error:
        fail(f"{error} (is {model} a model folder made by `zhijian train`?)")
    try:
        overrides = parse_overrides(set_ or [])
        if set(overrides) - {"serving"}:
            raise ConfigError(f"--set: only serving.* keys apply when serving, not {sorted(set(overrides) - {'serving'})}")
        settings = serving_settings(config, model, overrides.get("serving", {}))
        load_template(template)  # a bad template is an error before the server starts
        setup_logging()
        host = host or settings.host
        if host not in LOOPBACK and not os.environ.get(settings.api_key_env) and not settings.allow_unauthenticated:
            raise ConfigError(
                f"listening on {host} with no API key would let anyone who reaches the port use it: set "
                f"{settings.api_key_env}=<a secret key> (clients send Authorization: Bearer <key>), or, behind your own "
                "gateway, --set serving.allow_unauthenticated=true"
            )
        app_ = create_app(model, device, template, serving=overrides.get("serving"))
        uvicorn.run(app_, host=host, port=port or settings.port)
    except (ModelFolderError, ConfigError) as error:
        fail(str(error))
