# syntax=docker/dockerfile:1
# Build: docker build -t sidetrack .
# Run:   docker run -p 8080:8080 -p 9090:9090 -e SIDETRACK_ORIGIN=http://shop:3000 \
#          -e SIDETRACK_SECRETS_FILE=/run/secrets/sidetrack -v sidetrack-data:/data sidetrack
# The same image runs both roles of docs/deployment.md:
#   edge:      docker run … sidetrack -config /etc/sidetrack/edge.yaml
#   forwarder: docker run … sidetrack forward -config /etc/sidetrack/forwarder.yaml
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# The same command CI runs (.ci/run), so this recipe cannot silently break.
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/sidetrack . \
 && mkdir -p /out/data

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/sidetrack /sidetrack
COPY --from=build --chown=65532:65532 /out/data /data
WORKDIR /data
USER 65532:65532
# Inside the image the admin port listens on all interfaces so the
# orchestrator's probes and Prometheus can reach it; keep it off the
# public network (publish 9090 only to your monitoring). No destination is
# overridden here: env may change a destination, not add one, so an
# override would refuse every mounted config without it (the embedded
# defaults write their events under /data/sidetrack-data/events).
ENV SIDETRACK_LISTEN=":8080" \
    SIDETRACK_ADMIN__LISTEN=":9090" \
    SIDETRACK_SPOOL__DIR="/data/spool"
EXPOSE 8080 9090
VOLUME ["/data"]
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 CMD ["/sidetrack", "healthcheck"]
ENTRYPOINT ["/sidetrack"]
