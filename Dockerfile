# ntkcore app, CPU image:
#   docker build -t ntkcore .
#   docker run --rm -p 8501:8501 ntkcore          # then open http://localhost:8501
# GPU image (CUDA build of torch; needs the NVIDIA Container Toolkit on the host):
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 -t ntkcore:gpu .
#   docker run --rm --gpus all -p 8501:8501 ntkcore:gpu
FROM python:3.11-slim

# Wheel index for torch: CPU-only wheels by default (a plain `pip install torch` on Linux
# pulls a multi-GB CUDA build). Used as an *extra* index, so everything else comes from PyPI;
# pip prefers the local-version build (2.13.0+cpu / +cuXXX) over PyPI's 2.13.0.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    NTKCORE_CACHE=/home/app/.cache/ntkcore

RUN useradd --create-home --uid 1000 app
WORKDIR /home/app/ntkcore

# Third-party requirements first (everything but the editable `-e .` line), so this layer is
# cached across source changes.
COPY requirements.txt ./
RUN grep -v '^-e ' requirements.txt > /tmp/requirements-deps.txt \
    && pip install --extra-index-url "${TORCH_INDEX_URL}" -r /tmp/requirements-deps.txt \
    && rm /tmp/requirements-deps.txt

COPY --chown=app:app . .
RUN pip install --no-deps -e . && chown -R app:app /home/app

USER app
# Pre-train the Adapt page's source network into the image's model cache ($NTKCORE_CACHE), so
# the first page view only loads it.
RUN python -m ntkcore.zoo build --only sinusoids-mlp

EXPOSE 8501
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://localhost:8501/_stcore/health', timeout=4)"

CMD ["python", "app/launch.py", "--server.port=8501", "--server.address=0.0.0.0"]
