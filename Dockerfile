# Builds ingest, dispatcher and dashboard into one small image; compose.yaml picks the command.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --bins

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/ingest /src/target/release/dispatcher /src/target/release/dashboard /usr/local/bin/
COPY templates /app/templates
ENV TEMPLATES_DIR=/app/templates
USER nobody
CMD ["ingest"]
