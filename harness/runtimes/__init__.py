"""One module per target runtime: what it can run (`FORMATS`), whether it is
available on a device here (`missing`), load an artifact once per case, run it."""
