"""Check the docstrings' and the documentation's references, and build the documentation site.

    python -m jaxdiff.tools.docs                  # the docstring check; pdoc HTML into build/docs/api
    python -m jaxdiff.tools.docs --out DIR
    python -m jaxdiff.tools.docs --site build/docs/site   # also the site (mkdocs --strict): `make docs`

pdoc, not Sphinx: it reads the package as it is (signatures, type hints, docstrings in Markdown
with `backticked` names linked), needs no configuration tree, no reStructuredText and no
extension set, and builds the whole package in seconds, so CI can build it on every change.

The build fails (exit 1) on every pdoc warning (an annotation it cannot resolve, a module it
cannot import) except the known ones in `KNOWN_WARNINGS`, and on every backticked dotted name
`jaxdiff.<...>` in a docstring that does not resolve to a module, class, function or attribute
(a renamed or removed API that a docstring still points to). The same check runs over the
site's Markdown pages (docs/**/*.md) and README.md.

`--site DIR` then builds the documentation site (mkdocs.yml: guides, notebooks, the mkdocstrings API
reference) with `mkdocs build --strict`, which fails on every warning: a broken link or anchor, an
API page naming an object that does not exist, a notebook cell that raises. The notebooks run in
their tiny mode (JAXDIFF_NOTEBOOK_TINY=1). The build time is printed.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import pathlib
import re
import subprocess
import sys
import time
import typing
import warnings
from collections.abc import Iterator, Sequence

import pdoc
import pdoc.doc
from absl import flags

__all__ = [
  "MODULES",
  "KNOWN_WARNINGS",
  "build",
  "broken_references",
  "broken_page_references",
  "build_site",
  "main",
]

# What is documented: the package and every public submodule (the tools are internal).
MODULES = ("jaxdiff", "!jaxdiff.tools")
DEFAULT_OUT = "build/docs/api"
# pdoc warnings that are not ours to fix, each with the reason.
KNOWN_WARNINGS: tuple[tuple[str, str], ...] = (
  (
    r"Error parsing type annotation .*ArrayTree.* for (jaxdiff\.training(\.state)?|flax\.training\.train_state)\.TrainState",
    "flax's TrainState.opt_state is annotated with optax's recursive ArrayTree alias, which pdoc "
    "cannot evaluate",
  ),
)
_REFERENCE = re.compile(r"`(jaxdiff(?:\.[A-Za-z_]\w*)+)")


def _resolve_namedtuple_annotations(root: str = "jaxdiff") -> None:
  """NamedTuples declared under `from __future__ import annotations` carry their fields' types as
  strings on a generated `__new__` whose globals are not the module's: pdoc cannot evaluate them.
  Give it the types resolved in the class's own module (documentation process only)."""
  for name, module in list(sys.modules.items()):
    if not (name == root or name.startswith(root + ".")) or module is None:
      continue
    for cls in vars(module).values():
      if (
        inspect.isclass(cls) and cls.__module__ == name and issubclass(cls, tuple) and hasattr(cls, "_fields")
      ):
        try:
          cls.__new__.__annotations__ = typing.get_type_hints(cls)
        except Exception:  # leave it to pdoc's own warning
          pass


def _import_all(root: str = "jaxdiff") -> None:
  pkg = importlib.import_module(root)
  for path in sorted(pathlib.Path(pkg.__file__).parent.rglob("*.py")):
    rel = path.relative_to(pathlib.Path(pkg.__file__).parent).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    name = ".".join([root, *parts])
    if ".tools" in name or name.endswith("__main__"):
      continue
    _import_cli_module(name)


def _import_cli_module(name: str, tries: int = 16) -> None:
  """Import `name`. Command-line modules define their absl flags when imported, and two of them may
  define the same flag (`--workdir`, `--config`): a program imports one, the reference imports all.
  Here the earlier definition is dropped and the import retried (documentation process only)."""
  before = set(flags.FLAGS)
  for _ in range(tries):
    try:
      importlib.import_module(name)
      return
    except flags.DuplicateFlagError as e:
      match = re.search(r"The flag '([^']+)' is defined twice", str(e))
      if not match or match.group(1) not in flags.FLAGS:
        raise
      # the earlier definition goes, and so does every flag the failed partial import defined
      # (its own and those of helpers it called), or the retry collides with those
      for flag in {match.group(1), *(set(flags.FLAGS) - before)}:
        if flag in flags.FLAGS:
          delattr(flags.FLAGS, flag)
      before.discard(match.group(1))
      sys.modules.pop(name, None)
  importlib.import_module(name)


def _walk(doc: pdoc.doc.Doc) -> Iterator[pdoc.doc.Doc]:
  yield doc
  if isinstance(doc, pdoc.doc.Module):
    for sub in doc.submodules:
      yield from _walk(sub)
  if isinstance(doc, (pdoc.doc.Module, pdoc.doc.Class)):
    for member in doc.own_members:
      if isinstance(member, pdoc.doc.Class):
        yield from _walk(member)
      else:
        yield member


def _resolves(dotted: str) -> bool:
  parts = dotted.split(".")
  for i in range(len(parts), 0, -1):
    try:
      obj = importlib.import_module(".".join(parts[:i]))
    except ImportError:
      continue
    for attr in parts[i:]:
      if hasattr(obj, attr):
        obj = getattr(obj, attr)
      elif inspect.isclass(obj) and attr in _declared_fields(obj):
        obj = None  # a dataclass / NamedTuple field: an instance attribute, documented on the class
      else:
        return False
    return True
  return False


def _declared_fields(cls: type) -> set[str]:
  names = set(getattr(cls, "__dataclass_fields__", {})) | set(getattr(cls, "_fields", ()))
  for klass in cls.__mro__:
    names |= set(vars(klass).get("__annotations__", {}))
  return names


def broken_references(docs: Sequence[pdoc.doc.Doc]) -> list[str]:
  """'where: `name`' for every backticked `jaxdiff.<...>` name in a docstring that does not resolve."""
  out = []
  seen = set()
  for top in docs:
    for doc in _walk(top):
      for name in _REFERENCE.findall(doc.docstring or ""):
        name = name.rstrip(".")
        if (doc.fullname, name) not in seen and not _resolves(name):
          seen.add((doc.fullname, name))
          out.append(f"{doc.fullname}: `{name}`")
  return out


def broken_page_references(paths: Sequence[str | pathlib.Path]) -> list[str]:
  """'file:line: `name`' for every backticked `jaxdiff.<...>` name in Markdown pages that does not resolve."""
  out = []
  for path in paths:
    text = pathlib.Path(path).read_text()
    for m in _REFERENCE.finditer(text):
      name = m.group(1).rstrip(".")
      if not _resolves(name):
        out.append(f"{path}:{text.count(chr(10), 0, m.start()) + 1}: `{name}`")
  return out


def doc_pages(root: str | pathlib.Path = ".") -> list[pathlib.Path]:
  """The Markdown the site and the repository show: docs/**/*.md and README.md."""
  root = pathlib.Path(root)
  return sorted((root / "docs").rglob("*.md")) + [root / "README.md"]


def build_site(site: str | pathlib.Path, config: str = "mkdocs.yml") -> tuple[int, float]:
  """`mkdocs build --strict` into `site` (notebooks executed in tiny mode); (exit status, seconds)."""
  # no MPLBACKEND: the kernel draws figures inline (a set MPLBACKEND=Agg would leave the pages without them)
  env = {**os.environ, "JAXDIFF_NOTEBOOK_TINY": "1", "NO_MKDOCS_2_WARNING": "1"}
  env.pop("MPLBACKEND", None)
  start = time.perf_counter()
  cmd = [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", config, "-d", str(site)]
  rc = subprocess.call(cmd, env=env)
  return rc, time.perf_counter() - start


def build(out: str | pathlib.Path = DEFAULT_OUT, modules: Sequence[str] = MODULES) -> list[str]:
  """Write the HTML reference to `out`; returns the problems (unexpected warnings, broken references)."""
  _import_all()
  _resolve_namedtuple_annotations()
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    pdoc.render.configure(docformat="markdown", search=True, show_source=True)
    pdoc.pdoc(*modules, output_directory=pathlib.Path(out))
    roots = [pdoc.doc.Module(importlib.import_module(m)) for m in modules if not m.startswith("!")]
    problems = broken_references(roots)
  for w in caught:
    text = str(w.message)
    if not issubclass(w.category, DeprecationWarning) and not any(
      re.search(p, text) for p, _ in KNOWN_WARNINGS
    ):
      problems.append(f"pdoc: {text}")
  return problems


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
  parser.add_argument("--site", default="", help="also build the site (mkdocs.yml) into this folder")
  args = parser.parse_args(argv)
  problems = build(args.out) + broken_page_references(doc_pages())
  for p in problems:
    print(p, file=sys.stderr)
  if problems:
    print(
      f"docs: {len(problems)} problem(s); the reference was written to {args.out} anyway", file=sys.stderr
    )
    return 1
  print(f"docs: API reference in {args.out}/index.html")
  if args.site:
    rc, seconds = build_site(args.site)
    if rc:
      print(
        f"docs: the site build failed (mkdocs --strict, exit {rc}) after {seconds:.0f} s", file=sys.stderr
      )
      return 1
    print(f"docs: site in {args.site}/index.html, built in {seconds:.0f} s")
  return 0


if __name__ == "__main__":
  sys.exit(main())
