"""One module per conversion hop, from a format it `READS` to the one it
`WRITES` (the contract: harness/backends.py). Each module's
`convert(model_or_file, spec, example, out_dir, *, layouts, **options)` writes the
artifact into the folder it is given and returns the provenance: the tool, its
version, the options, and the layouts of the artifact's inputs and outputs
(`input_layouts`, `output_layouts`), which the engine uses to transpose
explicitly; `Options` (where present) is its own settings, flags such as
--exporter and --opset (backends.py), `OPTIONS` names the case's settings it
takes besides (layout_variant, precision, calibration), `VARIANTS` (where
present) the layout variants it makes;
`FILENAME` names the artifact in that folder, `versions()` the
tools whose versions key the cache, and `REVISION` the module's own version
(bumped when what it writes changes, so old cache entries are not reused)."""
