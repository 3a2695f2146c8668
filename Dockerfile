# kluis: a static binary on a distroless base, running as non-root.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /out/kluis ./cmd/kluis

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/kluis /kluis
USER nonroot:nonroot
ENTRYPOINT ["/kluis"]
