"""The import graph of jaxdiff (parsed with `ast`, nothing imported): no cycles, dependencies that
point one way through the layers (base -> core -> services -> CLIs), and no imports hidden in
functions except of the heavy optional modules. `python -m jaxdiff.tools.import_graph` prints it."""

from jaxdiff.tools import import_graph as ig


def _graph():
  return ig.build_graph()


def test_every_module_is_parsed():
  graph, _ = _graph()
  for name in ("jaxdiff", "jaxdiff.errors", "jaxdiff.diffusion", "jaxdiff.bulk.run", "train", "sample"):
    assert name in graph, name


def test_no_import_cycles():
  graph, _ = _graph()
  assert ig.cycles(graph) == []


def test_dependencies_point_down_the_layers():
  graph, _ = _graph()
  assert ig.layer_violations(graph) == []


def test_no_imports_hidden_in_functions():
  _, imports = _graph()
  hidden = [f"{i.module}:{i.line} imports {i.target}" for i in ig.hidden_imports(imports)]
  assert hidden == [], "move these imports to the top of their files:\n" + "\n".join(hidden)


def test_the_checks_see_cycles_upward_edges_and_hidden_imports(tmp_path):
  """The checker itself, on a made-up package: a cycle, an upward edge and a nested import."""
  pkg = tmp_path / "jaxdiff"
  (pkg / "bulk").mkdir(parents=True)
  files = {
    "jaxdiff": ("__init__.py", ""),
    "jaxdiff.errors": ("errors.py", "from jaxdiff import diffusion\n"),  # base -> core: upward
    "jaxdiff.diffusion": ("diffusion.py", "import numpy\n"),
    "jaxdiff.bulk": ("bulk/__init__.py", ""),
    "jaxdiff.bulk.a": ("bulk/a.py", "from jaxdiff.bulk import b\n"),
    # a cycle a <-> b through a relative import hidden in a function; torch may be imported there
    "jaxdiff.bulk.b": ("bulk/b.py", "def f():\n  from . import a\n  import torch\n"),
  }
  names = {}
  for module, (name, text) in files.items():
    (pkg / name).write_text(text)
    names[module] = str(pkg / name)
  graph, imports = ig.build_graph(names)
  assert graph["jaxdiff.bulk.a"] == {"jaxdiff.bulk.b"} and graph["jaxdiff.bulk.b"] == {"jaxdiff.bulk.a"}
  assert ig.cycles(graph) == [["jaxdiff.bulk.a", "jaxdiff.bulk.b"]]
  assert any(
    "jaxdiff.errors (base) imports jaxdiff.diffusion (core)" in p for p in ig.layer_violations(graph)
  )
  hidden = ig.hidden_imports(imports)
  assert [(i.module, i.target) for i in hidden] == [("jaxdiff.bulk.b", "jaxdiff.bulk.a")]


def test_the_command_prints_the_graph(capsys):
  status = ig.main([])
  out = capsys.readouterr().out
  assert "jaxdiff.bulk.run [services] ->" in out and "cycles:" in out
  assert status in (0, 1)


def test_every_name_a_package_exports_resolves():
  """`__all__` of each package, lazy names included, names something that imports."""
  import importlib
  import pkgutil

  import jaxdiff

  packages = ["jaxdiff"] + [
    m.name
    for m in pkgutil.walk_packages(jaxdiff.__path__, "jaxdiff.")
    if m.ispkg and m.name != "jaxdiff.tools"
  ]
  checked = 0
  for name in packages:
    package = importlib.import_module(name)
    for attr in getattr(package, "__all__", ()):
      if name == "jaxdiff" and attr == "interop":
        continue  # imports torch-free but heavy; tests/test_interop.py covers it
      assert getattr(package, attr) is not None, f"{name}.{attr}"
      checked += 1
  assert checked > 100
