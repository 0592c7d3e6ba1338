"""One module per target runtime: whether it is available on a device here
(`missing`), its versions, and a `Session(path, device, options, precision)` that
loads an artifact once per case, binds the spec's inputs and outputs to it and
runs it. Which formats a runtime takes is its `FORMATS`, which precisions its
`PRECISIONS` (the contract: harness/backends.py)."""
