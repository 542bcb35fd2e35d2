# The service image: one Bento, served by `bentoml serve` on port 3000, on top of a runtime image
# that already holds every package the service imports: the ONNX serving image
# (infra/docker/serve.Dockerfile) for a model whose export passed parity, else the project image.
# `cnnops bento --containerize` (or `make service-image`) writes the build context: this file and
# the Bento as `bento/`. RUNTIME_IMAGE is passed by serving.bento.containerize.
ARG RUNTIME_IMAGE
FROM ${RUNTIME_IMAGE}
ARG BENTO=unknown
ARG REGISTERED_MODEL=unknown
ARG MODEL_VERSION=unknown
LABEL org.opencontainers.image.title="cnnops-classifier" \
      org.opencontainers.image.description="cnnops image classifier: one registered model version over HTTP" \
      ai.cnnops.bento="${BENTO}" \
      ai.cnnops.registered-model="${REGISTERED_MODEL}" \
      ai.cnnops.model-version="${MODEL_VERSION}"
COPY bento /app/bento
# The Bento's code compiled to bytecode now: the root filesystem is read-only at run time, so
# otherwise every start would compile it again before the server is ready.
USER root
RUN python -m compileall -q /app/bento/src
USER 10001:10001
# Everything the server writes goes under /tmp (an emptyDir on Kubernetes): the root filesystem
# can be read-only.
ENV BENTOML_HOME=/tmp/bentoml
EXPOSE 3000
CMD ["bentoml", "serve", "/app/bento", "--host", "0.0.0.0", "--port", "3000"]
