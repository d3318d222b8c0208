# syntax=docker/dockerfile:1.7
# The images of flashsale, from one build: `--target booking-app` or `--target operator`.
# Build from the repository root (`make images` builds both, the second from the first's cached
# build stage):
#   docker build --target booking-app -t flashsale/booking-app:dev .
#   docker build --target operator -t flashsale/operator:dev .
# Each runs its workspace binary as a non-root user on a slim Debian.
ARG RUST_VERSION=1.95
FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY booking-app booking-app
COPY contract contract
COPY operator operator
# Both binaries in one cargo run: the workspace's dependencies are compiled once for the two.
# rdkafka builds its bundled librdkafka with configure+make (never cmake: see INFRA notes), its
# SSL and SASL against the image's OpenSSL (libssl-dev and pkg-config are in rust:bookworm).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p booking-app -p flashsale-operator \
 && install -Dm755 target/release/booking-app /out/booking-app \
 && install -Dm755 target/release/flashsale-operator /out/flashsale-operator

# libssl3 and zlib1g: booking-app's librdkafka (Kafka SSL, SASL_SSL, SCRAM; the operator links
# neither and only carries them); ca-certificates: the system roots a store's TLS, and the
# operator's API server connection, is verified against when no CA is given.
FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 zlib1g \
 && rm -rf /var/lib/apt/lists/*
# Numeric user so `runAsNonRoot` can verify it without /etc/passwd lookups.
USER 65532:65532
EXPOSE 8080

FROM runtime AS operator
COPY --from=build /out/flashsale-operator /usr/local/bin/flashsale-operator
ENTRYPOINT ["/usr/local/bin/flashsale-operator"]
CMD ["run"]

# Last, so a plain `docker build .` gives booking-app, as booking-app/Dockerfile did.
FROM runtime AS booking-app
COPY --from=build /out/booking-app /usr/local/bin/booking-app
ENTRYPOINT ["/usr/local/bin/booking-app"]
CMD ["serve"]
