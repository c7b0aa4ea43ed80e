"""mkdocs hooks of the jaxdiff site (mkdocs.yml `hooks:`; excluded from the pages themselves).

`benchmarks/BENCHMARKS.md` lives beside the benchmark scripts, where its commands run; the site
shows it as the page `benchmarks/results.md`, generated at build time from the file as it is, its
figure links rewritten from the repository's layout (`../docs/figures/`) to the site's.
"""

from __future__ import annotations

import pathlib

from mkdocs.structure.files import File, Files

SOURCE = "benchmarks/BENCHMARKS.md"
PAGE = "benchmarks/results.md"


def on_files(files: Files, config) -> Files:
  root = pathlib.Path(config["config_file_path"]).parent
  text = (root / SOURCE).read_text().replace("](../docs/figures/", "](../figures/")
  files.append(File.generated(config, PAGE, content=text))
  return files
