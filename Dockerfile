# The Banyan node as a container image.
#
#   docker build -t banyan .
#   docker run -d --name banyan -v banyan-data:/var/lib/banyan \
#     -p 1936:1936 -p 8890:8890/udp -p 8080:8080 \
#     -e BANYAN_PUBLIC_HOST=live.example.com banyan
#   docker logs banyan      # the first start: credentials path and the URLs
#   docker exec banyan banyan inputs create --name "My stream"
#
# Ports (the same as `banyan serve`'s defaults, on every interface of the
# container since its loopback is unreachable from outside):
#   1936/tcp  RTMPS: publishers (OBS, ffmpeg) and players
#   8890/udp  SRT: publishers and players
#   8080/tcp  HTTP: the API, LL-HLS, the watch page, GraphQL, /openapi.json
#   8443/udp  WebRTC: WHEP players (-p 8443:8443/udp, and
#             -e BANYAN_WEBRTC_PUBLIC_IP=<the host's address>: the address
#             the candidates announce)
#   9090/tcp  Prometheus /metrics without a token: not exposed; publish it
#             only to a private network (-p 127.0.0.1:9090:9090)
# Plain RTMP is off. Data (SQLite, certificates, credentials.json) is the
# volume /var/lib/banyan; config is /etc/banyan/banyan.toml (every option,
# commented) or BANYAN_* environment variables, which win over it.

FROM rust:1-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends pkg-config libsrt-openssl-dev libssl-dev cmake \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin banyan \
 && objcopy --strip-debug target/release/banyan /usr/local/bin/banyan

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends libsrt1.5-openssl libssl3 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system banyan \
 && useradd --system --gid banyan --home-dir /var/lib/banyan --no-create-home \
      --shell /usr/sbin/nologin banyan \
 && install -d -o banyan -g banyan -m 0700 /var/lib/banyan \
 && install -d -o root -g banyan -m 0750 /etc/banyan
COPY --from=build /usr/local/bin/banyan /usr/bin/banyan
COPY --chown=root:banyan --chmod=0640 packaging/banyan.toml /etc/banyan/banyan.toml
ENV BANYAN_CONFIG=/etc/banyan/banyan.toml \
    BANYAN_DATA_DIR=/var/lib/banyan \
    BANYAN_RTMPS=0.0.0.0:1936 \
    BANYAN_SRT=0.0.0.0:8890 \
    BANYAN_WEBRTC=0.0.0.0:8443 \
    BANYAN_HTTP=0.0.0.0:8080 \
    BANYAN_METRICS=0.0.0.0:9090 \
    BANYAN_NO_RTMP=true \
    RUST_LOG=info
USER banyan
WORKDIR /var/lib/banyan
VOLUME /var/lib/banyan
EXPOSE 1936/tcp 8890/udp 8080/tcp 8443/udp
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=10s --start-period=20s \
  CMD ["banyan", "doctor", "--quiet"]
ENTRYPOINT ["banyan"]
CMD ["serve"]
