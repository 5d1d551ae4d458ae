# AnsFlow: the API (`ansflow serve`) or a worker (`ansflow worker`) from one image.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md LICENSE alembic.ini ./
COPY src ./src
COPY migrations ./migrations
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[mysql,celery]"

FROM python:3.11-slim
# steps run real tools on the worker: git for fetch_code, make and rsync/ssh for builds
# and deploys; add what your pipelines need (npm, maven, kubectl, ...) in a derived image.
# bubblewrap is the step sandbox; setpriv (util-linux) starts steps as the step user;
# tini is PID 1: it reaps the orphans of steps' process trees and forwards signals
RUN apt-get update \
    && apt-get install -y --no-install-recommends git make openssh-client rsync ca-certificates \
       bubblewrap tini \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 ansflow-step
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/* && rm -rf /wheels
# The service runs as root so that it can start every step as ansflow-step (a real uid
# drop: steps cannot read the service's files or environment). bwrap needs a container
# that allows namespaces (docker run --cap-add SYS_ADMIN --security-opt seccomp=unconfined
# --security-opt apparmor=unconfined); without that ANSFLOW_SANDBOX=auto runs steps
# unsandboxed and says so in the log and on /readyz.
ENV ANSFLOW_DATABASE_URL=sqlite+aiosqlite:////var/lib/ansflow/data/ansflow.db \
    ANSFLOW_WORKSPACE_ROOT=/var/lib/ansflow/workspaces \
    ANSFLOW_ARTIFACT_ROOT=/var/lib/ansflow/artifacts \
    ANSFLOW_STEP_USER=ansflow-step \
    ANSFLOW_HEALTH_FILE=/var/lib/ansflow/health.json \
    PYTHONUNBUFFERED=1
RUN install -d -m 0755 /var/lib/ansflow /var/lib/ansflow/workspaces \
    && install -d -m 0700 /var/lib/ansflow/data /var/lib/ansflow/artifacts
WORKDIR /var/lib/ansflow
EXPOSE 8000
# serve: its /healthz answers; worker: its loop renewed its key in Redis (ansflow healthcheck)
HEALTHCHECK --interval=30s --timeout=10s --start-period=20s CMD ["ansflow", "healthcheck"]
ENTRYPOINT ["tini", "--", "ansflow"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
