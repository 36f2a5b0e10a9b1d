# make test: installs what the tests need, vets, then runs every test.
# Packages where concurrency lives run under the race detector.
.PHONY: test deps vet build bench fuzz run

RACE_PKGS := ./gateway/... ./transport/... ./broker/... ./api/... ./server/... ./client/... ./proxy/... ./bench/...

build:
	go build -o bin/spindle ./cmd/spindle

run:
	go run ./cmd/spindle serve

deps:
	bash scripts/deps.sh

vet:
	go vet ./...

test: deps vet
	bash scripts/test.sh

bench:
	go test -run '^$$' -bench . -benchmem ./...
