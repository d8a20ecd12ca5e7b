# The Aegis service image (also runs the demo tools and the one-shot policy/key jobs in
# docker-compose.yml).  Envoy runs from the official envoyproxy/envoy image.

# The compiled parts (Rust + PyO3), abi3 wheels for CPython 3.11 (bookworm's python3): the DLP
# core (dlp/native) and the gRPC front that serves Check (extauthz/native).
FROM rust:1.95-slim-bookworm AS native
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-pip \
 && pip3 install --break-system-packages maturin==1.16.0 \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY dlp/native dlp/native
COPY extauthz/native extauthz/native
RUN maturin build --release --interpreter python3 -m dlp/native/Cargo.toml --out /wheels \
 && maturin build --release --interpreter python3 -m extauthz/native/Cargo.toml --out /wheels

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY . .
COPY --from=native /wheels /wheels
# xds-protos ships an older opentelemetry/proto that shadows opentelemetry-proto's: reinstall it last.
RUN pip install . /wheels/*.whl \
 && pip install --force-reinstall --no-deps opentelemetry-proto==1.45.2 \
 && useradd --system --uid 10001 --home-dir /var/lib/aegis aegis \
 && mkdir -p /var/lib/aegis /bundle \
 && chown aegis:aegis /var/lib/aegis /bundle

USER aegis
WORKDIR /var/lib/aegis
EXPOSE 9191 9192 9193
CMD ["aegis", "serve", "-c", "/etc/aegis/aegis.yaml"]
