# make test: installs what the tests need, vets, then runs every test.
.PHONY: test deps vet build bench fuzz run


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
