# CPU image that serves a trained model folder:
#   docker build -t zhijian .
#   docker run -p 8000:8000 -v $PWD/runs/quickstart/model:/model zhijian
# GPU: docker build --build-arg BASE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 -t zhijian:cuda .
ARG BASE=python:3.11-slim
FROM ${BASE}
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 HF_HUB_OFFLINE=1
RUN if ! command -v python3 >/dev/null; then \
      apt-get update && apt-get install -y --no-install-recommends python3 python3-pip python3-venv && rm -rf /var/lib/apt/lists/*; \
    fi && python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /app
# torch first, from the index that matches the base image (CPU by default: no multi-GB CUDA wheels).
RUN pip install torch==2.13.0 --index-url ${TORCH_INDEX}
COPY pyproject.toml README.md ./
COPY zhijian ./zhijian
COPY training ./training
COPY serving ./serving
RUN pip install .
EXPOSE 8000
# The model folder is mounted at /model; serve listens on all interfaces inside the container.
CMD ["zhijian", "serve", "--model", "/model", "--host", "0.0.0.0", "--port", "8000"]
