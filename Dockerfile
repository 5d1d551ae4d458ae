# AnsFlow: the API (`ansflow serve`) or a worker (`ansflow worker`) from one image.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md LICENSE alembic.ini ./
COPY src ./src
COPY migrations ./migrations
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[mysql,celery]"

FROM python:3.11-slim
# steps run real tools on the worker: git for fetch_code, make and rsync/ssh for builds
# and deploys; add what your pipelines need (npm, maven, kubectl, ...) in a derived image;
# tini is PID 1: it reaps the orphans of steps' process trees and forwards signals
RUN apt-get update \
    && apt-get install -y --no-install-recommends git make openssh-client rsync ca-certificates \
       tini \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 ansflow
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/* && rm -rf /wheels
USER ansflow
WORKDIR /home/ansflow
ENV ANSFLOW_DATABASE_URL=sqlite+aiosqlite:////home/ansflow/data/ansflow.db \
    ANSFLOW_WORKSPACE_ROOT=/home/ansflow/workspaces \
    ANSFLOW_ARTIFACT_ROOT=/home/ansflow/artifacts \
    ANSFLOW_HEALTH_FILE=/home/ansflow/health.json \
    PYTHONUNBUFFERED=1
RUN mkdir -p /home/ansflow/data /home/ansflow/workspaces /home/ansflow/artifacts
EXPOSE 8000
# serve: its /healthz answers; worker: its loop renewed its key in Redis (ansflow healthcheck)
HEALTHCHECK --interval=30s --timeout=10s --start-period=20s CMD ["ansflow", "healthcheck"]
ENTRYPOINT ["tini", "--", "ansflow"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
