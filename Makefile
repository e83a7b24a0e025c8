# The two commands of the README. Everything else is in scripts they call.
.PHONY: test cluster-up cluster-down

## make test: every test (static checks, unit, mocked apiserver, e2e on the local cluster)
test:
	e2e/run-all

cluster-up:
	e2e/cluster/up

cluster-down:
	e2e/cluster/down
