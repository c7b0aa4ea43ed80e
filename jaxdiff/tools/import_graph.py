"""The import graph of jaxdiff: which module imports which, its cycles, its layers, hidden imports.

    python -m jaxdiff.tools.import_graph            # module -> its jaxdiff imports, then the checks
    python -m jaxdiff.tools.import_graph --summary  # only the layers and the checks

Every module of the package (and the CLIs train.py and sample.py beside it) is parsed with `ast`,
never imported, so the graph holds every import statement: top level, inside functions, under
`if TYPE_CHECKING` or `if __name__ == "__main__"`. `from jaxdiff.bulk import run` is an edge
to the module `jaxdiff.bulk.run` when that file exists, else to the package `jaxdiff.bulk`.
The implicit import of parent packages (`import jaxdiff.bulk.shards` also runs
`jaxdiff/bulk/__init__.py`) is not an edge: it would make every module depend on `jaxdiff`.

Dependencies point one way, through the layers of `LAYERS` (a module may import its own layer
and those before it); tests/test_imports.py asserts no cycles, no upward edges and no imports
hidden in functions beyond `LAZY_MODULES`. The exit status is 1 when a check fails.
"""

from __future__ import annotations

import argparse
import ast
import fnmatch
import os
import sys
from collections.abc import Iterable, Sequence
from typing import NamedTuple

__all__ = [
  "LAYERS",
  "LAZY_MODULES",
  "Import",
  "module_files",
  "parse_imports",
  "build_graph",
  "cycles",
  "layer_of",
  "layer_violations",
  "hidden_imports",
  "main",
]

PACKAGE = "jaxdiff"
PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO_ROOT = os.path.dirname(PACKAGE_DIR)
TOP_LEVEL_CLIS = ("train.py", "sample.py")

# Layers, lowest first: (name, module patterns). A module belongs to the first layer with a pattern
# that matches it, exact names checked before wildcards; patterns of modules that do not exist
# (yet) match nothing and are harmless. The default config (`jaxdiff.configs`) and the description
# of what a model takes (`jaxdiff.conditioning`) are plain data with no jaxdiff dependency beyond
# errors: they sit in the base layer, so models can be built from them.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
  (
    "base",
    (
      "jaxdiff.errors",
      "jaxdiff.configs",
      "jaxdiff.configs.*",
      "jaxdiff.conditioning",
      "jaxdiff.fileio",
      "jaxdiff.gaussian",
      "jaxdiff.perf",
      "jaxdiff.schedules",
      "jaxdiff.processes",
      "jaxdiff.grids",
      "jaxdiff.models",
      "jaxdiff.models.*",
      "jaxdiff.images",
      "jaxdiff.parallel",
      "jaxdiff.shards",
    ),
  ),
  (
    "core",
    (
      "jaxdiff",
      "jaxdiff.diffusion",
      "jaxdiff.few_step",
      "jaxdiff.few_step.*",
      "jaxdiff.samplers",
      "jaxdiff.samplers.*",
    ),
  ),
  (
    "services",
    (
      "jaxdiff.data",
      "jaxdiff.data.*",
      "jaxdiff.training",
      "jaxdiff.training.*",
      "jaxdiff.bulk",
      "jaxdiff.bulk.*",
      "jaxdiff.evaluation",
      "jaxdiff.evaluation.*",
      "jaxdiff.config_sampling",
      "jaxdiff.figures",
      "jaxdiff.config_utils",
      "jaxdiff.interop",
      "jaxdiff.interop.*",
      "jaxdiff.latents",
      "jaxdiff.notebook",
    ),
  ),
  (
    "cli",
    (
      "train",
      "sample",
      "jaxdiff.evaluation.__main__",
      "jaxdiff.evaluation.cli",
      "jaxdiff.interop.__main__",
      "jaxdiff.info",
      "jaxdiff.commands",
      "jaxdiff.tools",
      "jaxdiff.tools.*",
    ),
  ),
)

# Third-party modules that may be imported inside functions, with the reason.
LAZY_MODULES: dict[str, str] = {
  "tensorflow": "heavy, optional (the tfds extra); only TFDS data sets need it",
  "tensorflow_datasets": "optional (the tfds extra); only TFDS data sets need it",
  "array_record": "optional (comes with the tfds extra); only encoded latent sets need it",
  "torch": "optional; only reading pytorch-fid's .pth weights needs it",
  "tensorboardX": "slow to import; only a training run's TensorBoard writer needs it",
  "matplotlib": "optional (dev / bench extras, not a core dependency); only the plots need it",
}


class Import(NamedTuple):
  module: str  # the importing module
  target: str  # the imported module (full dotted name; jaxdiff targets resolved to files)
  line: int
  nested: bool  # inside a function body


def _module_name(path: str) -> str:
  rel = os.path.relpath(path, REPO_ROOT)[: -len(".py")].split(os.sep)
  if rel[-1] == "__init__":
    rel = rel[:-1]
  return ".".join(rel)


def module_files(package_dir: str = PACKAGE_DIR, clis: Iterable[str] = TOP_LEVEL_CLIS) -> dict[str, str]:
  """{dotted module name: path} of every .py file of the package and of the top-level CLIs."""
  files = {}
  for folder, dirs, names in os.walk(package_dir):
    dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not d.startswith("."))
    for name in sorted(names):
      if name.endswith(".py"):
        path = os.path.join(folder, name)
        files[_module_name(path)] = path
  for cli in clis:
    path = os.path.join(REPO_ROOT, cli)
    if os.path.exists(path):
      files[cli[: -len(".py")]] = path
  return files


def _resolve(node: ast.ImportFrom, module: str, is_package: bool) -> str:
  """The absolute module an ImportFrom names (relative imports resolved against `module`)."""
  if not node.level:
    return node.module or ""
  parts = module.split(".") if is_package else module.split(".")[:-1]
  parts = parts[: len(parts) - (node.level - 1)]
  return ".".join(parts + ([node.module] if node.module else []))


def _walk(tree: ast.AST):
  """(node, inside a function) for every node of the tree."""
  stack = [(tree, False)]
  while stack:
    node, nested = stack.pop()
    yield node, nested
    inner = nested or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
    stack.extend((child, inner) for child in ast.iter_child_nodes(node))


def parse_imports(module: str, path: str, known: Iterable[str]) -> list[Import]:
  """Every import statement of a file, as Imports (jaxdiff targets resolved to known modules)."""
  known = set(known)
  with open(path, encoding="utf-8") as f:
    tree = ast.parse(f.read(), filename=path)
  is_package = os.path.basename(path) == "__init__.py"
  out = []
  for node, nested in _walk(tree):
    if isinstance(node, ast.Import):
      targets = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = _resolve(node, module, is_package)
      targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
    else:
      continue
    out.extend(Import(module, t, node.lineno, nested) for t in dict.fromkeys(targets))
  return sorted(out, key=lambda i: (i.line, i.target))


def _is_ours(name: str) -> bool:
  return name == PACKAGE or name.startswith(PACKAGE + ".")


def build_graph(files: dict[str, str] | None = None) -> tuple[dict[str, set[str]], list[Import]]:
  """({module: the jaxdiff modules it imports}, every Import) over `files` (default: all)."""
  files = module_files() if files is None else files
  imports = [imp for name, path in files.items() for imp in parse_imports(name, path, files)]
  graph: dict[str, set[str]] = {name: set() for name in files}
  for imp in imports:
    if _is_ours(imp.target) and imp.target != imp.module:
      target = imp.target
      while target not in files and "." in target:  # `import jaxdiff.x.y` of a name, not a file
        target = target.rsplit(".", 1)[0]
      graph[imp.module].add(target)
  return graph, imports


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
  """The strongly connected components with more than one module (Tarjan), each sorted."""
  index: dict[str, int] = {}
  low: dict[str, int] = {}
  on_stack: set[str] = set()
  stack: list[str] = []
  found: list[list[str]] = []

  def visit(v: str) -> None:
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in sorted(graph.get(v, ())):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = []
      while True:
        w = stack.pop()
        on_stack.discard(w)
        component.append(w)
        if w == v:
          break
      if len(component) > 1:
        found.append(sorted(component))

  limit = sys.getrecursionlimit()
  sys.setrecursionlimit(max(limit, 10 * len(graph) + 100))
  try:
    for v in sorted(graph):
      if v not in index:
        visit(v)
  finally:
    sys.setrecursionlimit(limit)
  return sorted(found)


def layer_of(module: str) -> int | None:
  """The index in LAYERS of the module's layer (exact names first, then wildcards); None if none."""
  for exact in (True, False):
    for i, (_, patterns) in enumerate(LAYERS):
      for pattern in patterns:
        if ("*" in pattern) != exact and fnmatch.fnmatchcase(module, pattern):
          return i
  return None


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
  """Edges that point to a higher layer, and modules in no layer."""
  problems = []
  for module in sorted(graph):
    mine = layer_of(module)
    if mine is None:
      problems.append(f"{module} is in no layer: add it to LAYERS in jaxdiff/tools/import_graph.py")
      continue
    for target in sorted(graph[module]):
      theirs = layer_of(target)
      if theirs is not None and theirs > mine:
        problems.append(
          f"{module} ({LAYERS[mine][0]}) imports {target} ({LAYERS[theirs][0]}): dependencies point down"
        )
  return problems


def hidden_imports(imports: Iterable[Import], allowed: Iterable[str] = LAZY_MODULES) -> list[Import]:
  """Imports inside functions of modules other than the `allowed` third-party ones."""
  allowed = set(allowed)
  return [i for i in imports if i.nested and i.target.split(".")[0] not in allowed]


def _layer_name(module: str) -> str:
  i = layer_of(module)
  return "?" if i is None else LAYERS[i][0]


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
    prog="python -m jaxdiff.tools.import_graph", description=__doc__.split("\n")[0]
  )
  parser.add_argument("--summary", action="store_true", help="only the layers and the checks, not every edge")
  args = parser.parse_args(argv)
  graph, imports = build_graph()
  if not args.summary:
    print("# module [layer] -> its jaxdiff imports")
    for module in sorted(graph):
      print(f"{module} [{_layer_name(module)}] -> {', '.join(sorted(graph[module])) or '-'}")
    print()
  for name, _ in LAYERS:
    members = sorted(m for m in graph if _layer_name(m) == name)
    print(f"layer {name} ({len(members)} modules)")
  edges = sum(len(v) for v in graph.values())
  print(f"{len(graph)} modules, {edges} jaxdiff edges")
  found, violations, hidden = cycles(graph), layer_violations(graph), hidden_imports(imports)
  print(f"cycles: {len(found) or 'none'}")
  for component in found:
    print("  " + " <-> ".join(component))
  print(f"upward edges / unlayered modules: {len(violations) or 'none'}")
  for problem in violations:
    print("  " + problem)
  print(f"imports hidden in functions (beyond {', '.join(sorted(LAZY_MODULES))}): {len(hidden) or 'none'}")
  for imp in hidden:
    print(f"  {imp.module}:{imp.line} imports {imp.target}")
  return 1 if found or violations or hidden else 0


if __name__ == "__main__":
  sys.exit(main())
