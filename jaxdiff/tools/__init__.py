"""Developer tools: `python -m jaxdiff.tools.import_graph`."""
