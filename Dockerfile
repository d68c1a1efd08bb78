# Tunix RT image. One image, three roles (docker/entrypoint.sh): web (default), worker, migrate.
#
#   docker build -t tunix-rt .                                web and workers, no training stack
#   docker build --target worker-tunix -t tunix-rt-tunix .    + requirements-tunix.txt (google-tunix,
#                                                             JAX for CPU): workers that train
#   docker build --target worker-cuda -t tunix-rt-cuda .      + requirements-ray.txt and
#                                                             requirements-cuda.txt (JAX for CUDA 12):
#                                                             NVIDIA GPU workers and Ray nodes
#
# See docs/deployment.md.

# ---- builder: the runtime virtualenv, built once and copied into the final images.
FROM python:3.11-slim AS builder
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
COPY requirements.txt /build/requirements.txt
RUN pip install -r /build/requirements.txt

# ---- builder-tunix: the same virtualenv plus the training stack (about 1.6 GB).
FROM builder AS builder-tunix
COPY requirements-tunix.txt /build/requirements-tunix.txt
RUN pip install -r /build/requirements.txt -r /build/requirements-tunix.txt

# ---- builder-cuda: builder-tunix's virtualenv plus Ray and JAX's CUDA 12 build. The CUDA
# libraries are the pinned nvidia-* wheels (several GB), so no CUDA base image is needed.
# All four files in one resolve, so pip checks that their pins agree.
FROM builder-tunix AS builder-cuda
COPY requirements-ray.txt requirements-cuda.txt /build/
RUN pip install -r /build/requirements.txt -r /build/requirements-tunix.txt \
        -r /build/requirements-ray.txt -r /build/requirements-cuda.txt

# ---- app: the application code with its static files collected (whitenoise serves them).
FROM builder AS app
WORKDIR /app
COPY manage.py ./
COPY tunix_rt/ tunix_rt/
COPY runs/ runs/
COPY templates/ templates/
COPY static/ static/
COPY docker/entrypoint.sh docker/entrypoint.sh
RUN SECRET_KEY=collectstatic-only TUNIX_VAR_DIR=/tmp/build-var \
        python manage.py collectstatic --noinput \
    && chmod 0755 docker/entrypoint.sh \
    && find . -name __pycache__ -prune -exec rm -rf {} + \
    && rm -rf /tmp/build-var

# ---- base: what the final images share. Datasets, artifacts and models live below
# TUNIX_VAR_DIR: mount a volume there (shared between web and worker containers).
FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    TUNIX_VAR_DIR=/var/lib/tunix-rt
RUN groupadd --system --gid 10001 tunix \
    && useradd --system --uid 10001 --gid tunix --create-home --home-dir /home/tunix \
        --shell /usr/sbin/nologin tunix \
    && install -d -o tunix -g tunix /var/lib/tunix-rt
WORKDIR /app
EXPOSE 8000
# Liveness of the web role; python because the slim image has no curl. The Host header is the
# first ALLOWED_HOSTS entry: Django answers 400 to a host it does not serve.
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=8)"]
ENTRYPOINT ["/app/docker/entrypoint.sh"]
CMD ["web"]

# ---- worker-tunix: a worker that trains for real (local mode). Not a web server.
FROM base AS worker-tunix
COPY --from=builder-tunix /opt/venv /opt/venv
COPY --from=app /app /app
HEALTHCHECK NONE
USER 10001:10001
CMD ["worker"]

# ---- worker-cuda: a worker that trains on NVIDIA GPUs (local mode), or supervises Ray runs. Run
# it with the host's driver passed in by the NVIDIA container toolkit (docker run --gpus all);
# the GPUs a worker serves are set at run time (TUNIX_RESOURCE_CLASSES, Q_CLUSTER_NAME, see
# docs/deployment.md), not here. The same image serves as a Ray node image: Ray nodes need the
# project's code and the Ray version the workers submit with, e.g.
#   docker run --gpus all tunix-rt-cuda ray start --address=HEAD:6379 --block
FROM base AS worker-cuda
# compute for CUDA, utility for nvidia-smi: what the toolkit mounts from the host driver. Not
# NVIDIA_VISIBLE_DEVICES: which GPUs a container gets is the operator's choice (--gpus).
ENV NVIDIA_DRIVER_CAPABILITIES=compute,utility
# KubeRay's default readiness and liveness probes run wget inside Ray node containers.
RUN apt-get update \
    && apt-get install -y --no-install-recommends wget \
    && rm -rf /var/lib/apt/lists/*
COPY --from=builder-cuda /opt/venv /opt/venv
COPY --from=app /app /app
HEALTHCHECK NONE
USER 10001:10001
CMD ["worker"]

# ---- runtime (the default target): web, worker and migrate.
FROM base AS runtime
COPY --from=builder /opt/venv /opt/venv
COPY --from=app /app /app
USER 10001:10001
