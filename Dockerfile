# The gate (authz_service): the decision service NGINX asks via auth_request.
FROM python:3.11.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY authz_service ./authz_service
RUN pip install . && rm -rf /src

RUN useradd --system --uid 10001 --no-create-home gate
USER gate
WORKDIR /

# Inside a container network the gate must listen beyond loopback; never publish it.
ENV GATE_HOST=0.0.0.0 \
    GATE_PORT=8090
EXPOSE 8090

CMD ["python", "-m", "authz_service"]
