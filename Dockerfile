# The loom image: `loom run` (the sidecar), `loom worker` (the reference worker), and the
# reference participants (`python -m services`). Used by docker-compose.yml.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY bridge ./bridge
COPY routes ./routes
COPY workflows ./workflows
COPY services ./services
RUN pip install . && useradd --create-home --uid 10001 loom

USER loom
EXPOSE 8088
ENTRYPOINT ["loom"]
CMD ["run"]
