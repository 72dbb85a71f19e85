# Runs `reminder-service run` as a non-root user; database and outbox live on the /data volume.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# The same install as the README's: a virtual environment and `pip install` of pyproject.toml's pins.
COPY pyproject.toml README.md ./
COPY reminder_service ./reminder_service
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir .

COPY config ./config
COPY templates ./templates

RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin reminder \
    && mkdir -p /data \
    && chown reminder /data

ENV PATH=/opt/venv/bin:$PATH \
    REMINDER_DATABASE_URL=sqlite:////data/reminders.db \
    REMINDER_OUTBOX_DIR=/data/outbox \
    REMINDER_CONFIG_DIR=/app/config \
    REMINDER_TEMPLATES_DIR=/app/templates \
    REMINDER_HTTP_HOST=0.0.0.0 \
    REMINDER_HTTP_PORT=8080

USER 10001
VOLUME ["/data"]
# Webhooks (Twilio status callbacks) and GET /healthz.
EXPOSE 8080
STOPSIGNAL SIGTERM
ENTRYPOINT ["reminder-service"]
CMD ["run"]
