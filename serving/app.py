"""`zhijian serve`: the inspector behind FastAPI.

Routes: ``POST /v1/score`` (one transcript, a list, or a plain-text chat -> the same
:class:`DialogueResult` as ``zhijian score --json``), ``POST /v1/utterances`` (bare agent texts
with optional context, for checks while the agent types), ``GET /v1/model``, ``GET /healthz``
(alive), ``GET /readyz`` (model loaded and warmed up), ``GET /metrics`` (Prometheus), and the
inspector page at ``/``. Requests share model calls through a micro-batcher with a bounded queue;
limits, the optional API key and the scoring template (re-read when its file changes) come from
the model folder's ``serving`` config and the template file.

The pieces: ``schemas`` (the JSON bodies), ``state`` (the loaded model and its lifespan), ``deps``
(API key, readiness, limits, reading a request), ``middleware`` and ``routes``.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from serving.middleware import add_middleware
from serving.routes import ROUTERS
from serving.state import ServingOptions, ServingState, lifespan


def create_app(
    model_dir: str | Path,
    device: str | None = None,
    template: str | Path | None = None,
    serving: dict[str, Any] | None = None,
    api_key: str | None = None,
) -> FastAPI:
    """The app for one model folder; `serving` overrides keys of the folder's `serving` config.

    The API key is `api_key`, else the environment variable named by `serving.api_key_env`. The
    model is loaded when the app starts (its lifespan), not here.
    """
    options = ServingOptions(Path(model_dir), device, Path(template) if template else None, dict(serving or {}), api_key)
    app = FastAPI(title="Zhijian 质检", version=importlib.metadata.version("zhijian"), lifespan=lifespan)  # pyproject.toml's
    app.state.serving = state = ServingState(options)
    add_middleware(app, state)
    for router in ROUTERS:
        app.include_router(router)
    return app
