# Ferry's one binary, `gateway`, in a small image.
# Build: docker build -t ferry .   Run: docker run -p 7070:7070 -p 7071:7071 -p 7072:7072 ferry
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /out/gateway ./gateway

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/gateway /usr/local/bin/gateway
VOLUME /data
EXPOSE 7070 7071 7072 7073
USER nonroot
# The agent's /healthz on the admin listener (127.0.0.1:7071 inside the
# container); `gateway healthcheck` answers within its own -timeout, shorter
# than --timeout, so the runtime keeps its one-line reason.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/gateway", "healthcheck", "-addr", "http://127.0.0.1:7071", "-timeout", "3s"]
ENTRYPOINT ["/usr/local/bin/gateway"]
CMD ["agent", "-data-dir", "/data", \
     "-listen", "0.0.0.0:7070", "-admin-listen", "0.0.0.0:7071", \
     "-legacy-listen", "/ip4/0.0.0.0/tcp/7072", "-bridge-listen", "/ip4/0.0.0.0/tcp/7073"]
