# The ONNX serving image: what a cnnops service image runs on when its model serves with ONNX
# Runtime. It holds the `serve` dependency group of uv.lock (BentoML, ONNX Runtime, numpy, Pillow,
# pydantic, scikit-learn) and no TensorFlow, Keras, MLflow or kfp; the library's own serving code
# comes in each Bento. Build with `make serve-image`; the build context is the repository root.
#
# BASE_IMAGE: any Debian-based image with Python 3.11 and python3-venv (see infra/docker/Dockerfile).
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
ARG UV_VERSION=0.13.8
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv \
    PIP_DISABLE_PIP_VERSION_CHECK=1
COPY infra/docker/trust.sh /usr/local/bin/trust
RUN --mount=type=secret,id=ca --mount=type=cache,target=/root/.cache/pip \
    trust python3 -m venv /opt/uv && trust /opt/uv/bin/pip install --quiet "uv==${UV_VERSION}"
WORKDIR /src
RUN --mount=type=secret,id=ca --mount=type=cache,target=/root/.cache/uv \
    --mount=type=bind,source=uv.lock,target=uv.lock \
    --mount=type=bind,source=pyproject.toml,target=pyproject.toml \
    trust /opt/uv/bin/uv sync --locked --only-group serve --no-install-project --python python3 \
    # Tests and headers shipped inside wheels serve nobody in a running service.
    && find /app/.venv -depth \( -name tests -o -name __pycache__ -path '*/tests/*' \) -type d -prune \
         -exec rm -rf {} + \
    && find /app/.venv -name '*.pyx' -o -name '*.pxd' -o -name '*.h' | xargs rm -f

FROM ${BASE_IMAGE}
RUN groupadd --gid 10001 cnnops && useradd --uid 10001 --gid 10001 --create-home --shell /bin/sh cnnops
COPY --from=build /app/.venv /app/.venv
# Everything the server writes goes under /tmp: the root filesystem can be read-only. The
# telemetry of ONNX Runtime and MLflow, which would keep an ID under $HOME, is off.
ENV PATH=/app/.venv/bin:${PATH} \
    CNNOPS_HOME=/tmp/cnnops \
    BENTOML_HOME=/tmp/bentoml \
    ORT_DISABLE_TELEMETRY=1 \
    MLFLOW_DISABLE_TELEMETRY=true \
    PYTHONUNBUFFERED=1
USER 10001:10001
WORKDIR /home/cnnops
ARG VERSION=unknown
ARG GIT_COMMIT=unknown
LABEL org.opencontainers.image.title="cnnops-serve" \
      org.opencontainers.image.description="cnnops ONNX serving runtime: BentoML and ONNX Runtime, no TensorFlow" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${GIT_COMMIT}" \
      org.opencontainers.image.licenses="Apache-2.0"
