"""mkdocs hooks of the jaxdiff site (mkdocs.yml `hooks:`; excluded from the pages themselves).

An API page may name a package's modules with a wildcard, `::: jaxdiff.training.*` on a line of
its own: it becomes one `::: jaxdiff.training.<module>` line per public module file of the package
as it is (names starting with `_` and `__main__` left out), so a module added, renamed or removed
needs no edit of the page.

`benchmarks/BENCHMARKS.md` lives beside the benchmark scripts, where its commands run; the site
shows it as the page `benchmarks/results.md`, generated at build time from the file as it is, its
figure links rewritten from the repository's layout (`../docs/figures/`) to the site's.
"""

from __future__ import annotations

import pathlib
import re

from mkdocs.structure.files import File, Files

SOURCE = "benchmarks/BENCHMARKS.md"
PAGE = "benchmarks/results.md"
_WILDCARD = re.compile(r"^::: (jaxdiff(?:\.\w+)*)\.\*[ \t]*$", re.M)


def on_files(files: Files, config) -> Files:
  root = pathlib.Path(config["config_file_path"]).parent
  text = (root / SOURCE).read_text().replace("](../docs/figures/", "](../figures/")
  files.append(File.generated(config, PAGE, content=text))
  return files


def package_modules(root: pathlib.Path, package: str) -> list[str]:
  """The public modules of `package` (dotted), from its files under `root`."""
  folder = root.joinpath(*package.split("."))
  return [f"{package}.{p.stem}" for p in sorted(folder.glob("*.py")) if not p.stem.startswith("_")]


def on_page_markdown(markdown: str, page, config, files) -> str:
  root = pathlib.Path(config["config_file_path"]).parent
  return _WILDCARD.sub(
    lambda m: "\n\n".join(f"::: {name}" for name in package_modules(root, m.group(1))), markdown
  )
