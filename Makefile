# The README's two commands, and a few shortcuts. The work is in the scripts they call.
TARGET ?= local
export TARGET
.PHONY: up down test cluster-up cluster-down render

## make up [TARGET=current]: the whole system, with a URL and an API key printed
up:
	@e2e/deploy/up

## make down: uninstall, and stop the local cluster
down:
	@e2e/deploy/down

## make test: every test (static checks, unit, mocked apiserver, e2e on the local cluster)
test:
	@e2e/run-all

cluster-up:
	@e2e/cluster/up

cluster-down:
	@e2e/cluster/down

## make render: regenerate crds/, charts/kubexec/crds/ and manifests/install.yaml
render:
	@e2e/tools/render-manifests
