# The loom image: `loom run` (the sidecar), `loom worker` (the reference worker), and the
# reference participants (`python -m services`). Used by docker-compose.yml and
# deploy/kubernetes/.
FROM python:3.12-slim

# LOOM_HTTP_HOST: health and metrics answer outside the container (docker run -p 8088:8088,
# Kubernetes probes, Prometheus). PYTHONPATH: the reference application (routes/,
# workflows/, services/) is not installed: it runs from /app, the working directory.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/app \
    LOOM_HTTP_HOST=0.0.0.0

WORKDIR /app
COPY pyproject.toml README.md LICENSE ./
COPY bridge ./bridge
COPY routes ./routes
COPY workflows ./workflows
COPY services ./services
RUN pip install ".[otlp]" && useradd --create-home --uid 10001 loom

USER loom
EXPOSE 8088
ENTRYPOINT ["loom"]
CMD ["run"]
