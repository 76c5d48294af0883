# Slim CPU image for the API, the encoder and the notify worker: no torch, no diffusers.
FROM python:3.11-slim-bookworm

# Debian's ffmpeg follows the base image's security updates; pinning it would break every rebuild.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ffmpeg \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY requirements.lock pyproject.toml README.md ./
# The pinned versions of what these processes import and their dependencies (no torch, no diffusers);
# tests/unit/test_deploy.py checks that each name is pinned in requirements.lock.
RUN grep -i -E '^(fastapi|starlette|annotated[-_]doc|uvicorn|h11|uvloop|httptools|click|celery|kombu|amqp|billiard|vine|click[-_]didyoumean|click[-_]plugins|click[-_]repl|prompt[-_]toolkit|wcwidth|python[-_]dateutil|six|tzlocal|redis|opentelemetry[-_]api|packaging|boto3|botocore|s3transfer|jmespath|urllib3|pydantic|pydantic[-_]core|pydantic[-_]settings|annotated[-_]types|typing[-_]extensions|typing[-_]inspection|python[-_]dotenv|httpx|httpcore|anyio|idna|certifi|pyyaml|python[-_]multipart|prometheus[-_]client|pillow|numpy)==' \
        requirements.lock > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt flower==2.0.1

COPY stepanim ./stepanim
COPY api ./api
COPY encoder ./encoder
COPY notify ./notify

RUN useradd --create-home --uid 10001 stepanim
USER 10001
ENV PYTHONUNBUFFERED=1 PYTHONPATH=/app
EXPOSE 8000
# uvicorn drains on SIGTERM (--timeout-graceful-shutdown); Celery workers shut down warm.
# The app writes its own JSON access line (with the job id): uvicorn's is off.
STOPSIGNAL SIGTERM
CMD ["uvicorn", "api.app:create_app", "--factory", "--host", "0.0.0.0", "--port", "8000", "--timeout-graceful-shutdown", "30", "--no-access-log"]
