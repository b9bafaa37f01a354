# CPU image that serves a trained model folder mounted at runtime:
#   docker build -t zhijian .
#   docker run -p 8000:8000 -v $PWD/runs/quickstart/model:/model:ro zhijian
# GPU (fp16, same code): docker build --build-arg BASE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 \
#   --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 -t zhijian:cuda .
#   docker run --gpus all -p 8000:8000 -v $PWD/runs/quickstart/model:/model:ro zhijian:cuda
# The steps are the Makefile's: a venv, torch first (the build that matches the base), then the project.
ARG BASE=python:3.11-slim
FROM ${BASE}
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 HF_HUB_OFFLINE=1
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# A CUDA base has no Python of its own (its apt versions vary by base, so they are not pinned).
# hadolint ignore=DL3008
RUN if ! command -v python3 >/dev/null; then \
      apt-get update && apt-get install -y --no-install-recommends python3 python3-pip python3-venv \
      && rm -rf /var/lib/apt/lists/*; \
    fi \
    && python3 -m venv /opt/venv \
    && useradd --system --uid 10001 --home-dir /app zhijian
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /app
RUN pip install torch==2.13.0 --index-url "${TORCH_INDEX}"
COPY pyproject.toml README.md ./
COPY zhijian ./zhijian
COPY training ./training
COPY serving ./serving
COPY zhijian_cli.py ./
COPY configs ./configs
# Editable, so the package finds configs/ (scoring template, keyword baseline) beside it in /app.
RUN pip install -e '.[onnx]' && chown -R root:root /app
USER 10001
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python3", "-c", "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status != 200)"]
# The model folder is mounted at /model (read-only is fine); serve listens on all interfaces inside the container,
# so it needs an API key: docker run -e ZHIJIAN_API_KEY=<secret> ... (clients send Authorization: Bearer <secret>).
# Without one it refuses to start and says how to set it; behind your own authenticating gateway, append
# `--set serving.allow_unauthenticated=true` to the command instead.
CMD ["zhijian", "serve", "--model", "/model", "--host", "0.0.0.0", "--port", "8000"]
