# Slim CPU image for the API, the encoder and the notify worker: no torch, no diffusers.
FROM python:3.11-slim-bookworm

RUN apt-get update \
    && apt-get install -y --no-install-recommends ffmpeg \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY requirements.lock pyproject.toml README.md ./
# The pinned versions of what these processes import (torch and diffusers excluded).
RUN grep -E '^(fastapi|starlette|uvicorn|h11|celery|kombu|billiard|vine|click|redis|boto3|botocore|s3transfer|jmespath|pydantic|pydantic-core|pydantic-settings|annotated-types|typing-extensions|typing-inspection|python-dotenv|httpx|httpcore|anyio|idna|certifi|sniffio|pyyaml|python-multipart|pillow|numpy|urllib3|python-dateutil|six|tzdata|tzlocal)==' \
        requirements.lock > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt flower==2.0.1

COPY stepanim ./stepanim
COPY api ./api
COPY encoder ./encoder
COPY notify ./notify

RUN useradd --create-home --uid 10001 stepanim
USER stepanim
ENV PYTHONUNBUFFERED=1 PYTHONPATH=/app
EXPOSE 8000
CMD ["uvicorn", "api.app:create_app", "--factory", "--host", "0.0.0.0", "--port", "8000"]
