# syntax=docker/dockerfile:1
# Rewind's game server as a container image: built with the Agones SDK (the `agones` feature),
# run as a non-root user, recordings on a volume. docs/deploy.md shows how a studio uses it.
#
#   docker build -t rewind-server .
# Outside Agones, give the arguments yourself (they replace CMD), without --agones:
#   docker run --rm -p 7777:7777/udp -p 9100:9100 -v rewind-recordings:/var/lib/rewind/recordings \
#     rewind-server --match-size 10

# Build stage: the Rust toolchain and protoc (the Agones SDK's gRPC code is generated at build).
FROM rust:1-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends protobuf-compiler \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p rewind-server --features agones \
 && strip target/release/rewind-server

# Runtime stage: a slim Debian, the binary, the assets, a user without privileges.
FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/rewind rewind \
 && mkdir -p /var/lib/rewind/recordings \
 && chown -R 10001:10001 /var/lib/rewind
COPY --from=build /src/target/release/rewind-server /usr/local/bin/rewind-server
COPY assets /opt/rewind/assets
USER 10001:10001
WORKDIR /var/lib/rewind
VOLUME ["/var/lib/rewind/recordings"]
# The game (QUIC over UDP) and the Prometheus endpoint.
EXPOSE 7777/udp 9100/tcp
ENTRYPOINT ["rewind-server", "--bind", "0.0.0.0:7777", "--assets", "/opt/rewind/assets", "--record-dir", "/var/lib/rewind/recordings", "--metrics", "0.0.0.0:9100"]
CMD ["--agones", "--token-key-file", "/etc/rewind/token/key", "--cert", "/etc/rewind/tls/tls.crt", "--key", "/etc/rewind/tls/tls.key", "--match-size", "10", "--matches", "1", "--match-length", "900"]
