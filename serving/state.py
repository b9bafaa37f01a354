"""What the routes share, and its lifespan: the one inspector, the micro-batcher, the template file, the metrics.

:func:`create_app <serving.app.create_app>` puts a :class:`ServingState` on ``app.state.serving``; the
lifespan loads the model folder into it at startup. A folder that cannot be loaded leaves the server
alive but not ready (``/readyz`` says why, ``/v1`` answers 503), so a deployment sees the reason
instead of a crash loop.
"""

from __future__ import annotations

import logging
import os
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from pydantic import ValidationError

from serving.batcher import MicroBatcher
from zhijian.config import CONFIG_FILE, ConfigError, ServingSection, ZhijianConfig, describe_validation_error
from zhijian.inspector import Inspector
from zhijian.model import ModelFolderError
from zhijian.scorer import Scorer
from zhijian.template import DEFAULT_TEMPLATE, ScoringTemplate, load_template
from zhijian.transcripts import Transcript

log = logging.getLogger("zhijian.serving")
WARM_UP = Transcript(id="warm-up", turns=[{"role": "agent", "text": "您好,请问有什么可以帮您"}])


class TemplateFile:
    """The scoring template, re-read when its file changes: a shop edits its rules, the next request uses them.

    A file that no longer validates is reported (``/readyz``, the log) and the last good template
    stays in use, so a typo never takes scoring down.
    """

    def __init__(self, path: Path | None):
        self.path = Path(path) if path else DEFAULT_TEMPLATE
        self.template = load_template(self.path)  # at startup a bad template is an error
        self.mtime = self.path.stat().st_mtime_ns
        self.error: str | None = None

    def current(self) -> ScoringTemplate:
        try:
            mtime = self.path.stat().st_mtime_ns
        except OSError as error:
            self.error = f"{self.path}: {error.strerror}; still using {self.template.version_tag}"
            return self.template
        if mtime != self.mtime:
            self.mtime = mtime
            try:
                self.template, self.error = load_template(self.path), None
                log.info("scoring template reloaded: %s", self.template.version_tag)
            except ConfigError as error:
                self.error = f"{error}; still using {self.template.version_tag}"
                log.error(self.error)
        return self.template


class Metrics:
    """Prometheus metrics in the app's own registry (several apps can live in one process, as in tests)."""

    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Counter("zhijian_requests_total", "Requests by route and status.", ["route", "status"], registry=self.registry)
        self.latency = Histogram("zhijian_request_seconds", "Request latency by route.", ["route"], registry=self.registry)
        self.batch_size = Histogram(
            "zhijian_batch_dialogues", "Dialogues per model call.", buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=self.registry
        )
        self.model_latency = Histogram("zhijian_model_seconds", "Seconds per model call (a whole micro-batch).", registry=self.registry)
        self.queue_depth = Gauge("zhijian_queue_depth", "Requests waiting for the model.", registry=self.registry)

    def batch(self, dialogues: int, seconds: float) -> None:
        self.batch_size.observe(dialogues)
        self.model_latency.observe(seconds)


def serving_settings(config: ZhijianConfig, model: Path, overrides: Any) -> ServingSection:
    """The folder's `serving` config with `--set serving.*` (or `create_app`'s `serving`) applied and validated,
    without reading the folder again: the one place overrides meet the config, for `zhijian serve` and the lifespan.

    An invalid value is named as `load_config` names it: ``<folder>/zhijian.yaml: serving.port: ...``.
    """
    merged = config.serving.model_dump() | overrides if isinstance(overrides, dict) else overrides
    try:
        return ZhijianConfig.model_validate({"serving": merged}).serving
    except ValidationError as error:
        source = model / CONFIG_FILE if model.is_dir() else model
        raise ConfigError(f"{source}: {describe_validation_error(error)}") from None


@dataclass(frozen=True)
class ServingOptions:
    """What :func:`~serving.app.create_app` was given; the lifespan reads the model folder with them."""

    model_dir: Path
    device: str | None = None
    template: Path | None = None
    overrides: dict[str, Any] = field(default_factory=dict)  # keys of the folder's `serving` config
    api_key: str | None = None  # else the environment variable named by serving.api_key_env


@dataclass
class ServingState:
    """The app's shared state, on ``app.state.serving``: set up by :meth:`start`, read by the routes."""

    options: ServingOptions
    metrics: Metrics = field(default_factory=Metrics)
    limits: ServingSection = field(default_factory=ServingSection)  # the defaults until the model folder is read
    api_key: str | None = None
    not_ready: str | None = "loading the model"  # the reason /readyz and the 503s give; None once ready
    template_file: TemplateFile | None = None
    inspector: Inspector | None = None
    batcher: MicroBatcher | None = None

    @property
    def ready(self) -> bool:
        return self.not_ready is None

    def start(self) -> None:
        """Load the model once, warm it up and start the batcher; a folder that cannot be loaded is logged, not raised."""
        options = self.options
        self.template_file = TemplateFile(options.template)
        self.api_key = self._api_key(ServingSection())  # guarded even when not ready
        try:
            scorer = Scorer.load(options.model_dir, options.device, options.overrides.get("backend"))
        except (ModelFolderError, ConfigError, FileNotFoundError, RuntimeError) as error:
            # Alive but not ready: /readyz says why, /v1 answers 503 with the reason; no traceback as the only message.
            self.not_ready = str(error)
            log.error("not ready: %s", error)
            return
        # validated, not just copied: a bad override is an error that names the key
        self.limits = serving_settings(scorer.config, options.model_dir, options.overrides)
        self.api_key = self._api_key(self.limits)
        self.inspector = Inspector(scorer, self.template_file.template, scorer.folder.version, self.limits.evidence)
        self.inspector.inspect([WARM_UP])
        self.batcher = MicroBatcher(
            lambda dialogues: self.current_inspector().inspect(dialogues),
            max_dialogues=self.limits.batch_max_dialogues,
            max_wait=self.limits.batch_max_wait_ms / 1000,
            queue_size=self.limits.queue_size,
            on_batch=self.metrics.batch,
        )
        self.metrics.queue_depth.set_function(lambda: self.batcher.depth)  # read at each scrape
        self.batcher.start()
        self.not_ready = None
        log.info("ready: %s on %s, template %s", self.inspector.versions.model, scorer.device, self.inspector.versions.template)

    async def stop(self) -> None:
        self.not_ready = "shutting down"
        if self.batcher:
            await self.batcher.stop()

    def current_inspector(self) -> Inspector:
        """The loaded inspector under the template as its file is now (a changed template; the weights stay). Only when ready."""
        template = self.template_file.current()
        if template is not self.inspector.template:
            self.inspector = self.inspector.with_template(template)
        return self.inspector

    def _api_key(self, limits: ServingSection) -> str | None:
        return self.options.api_key or os.environ.get(limits.api_key_env) or None


@asynccontextmanager
async def lifespan(app: FastAPI):
    """The model is loaded before the first request and the batcher stopped after the last."""
    state: ServingState = app.state.serving
    state.start()
    yield
    await state.stop()
