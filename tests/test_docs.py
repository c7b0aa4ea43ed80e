"""The API reference's check (jaxdiff/tools/docs.py, run by `make docs` in CI) finds broken references."""

import pathlib
import sys
import types

import pytest

pdoc = pytest.importorskip("pdoc")

from jaxdiff.tools import docs  # noqa: E402


def test_broken_docstring_references_are_found(monkeypatch):
  mod = types.ModuleType("jaxdiff_docs_probe")
  mod.__doc__ = "Uses `jaxdiff.sample`, `jaxdiff.processes.EDM` and `jaxdiff.bulk.restore_model`."

  def f():
    """Calls `jaxdiff.samplers.no_such_sampler` and `jaxdiff.gone_module.thing`."""

  f.__module__ = mod.__name__
  mod.f = f
  mod.__all__ = ["f"]
  monkeypatch.setitem(sys.modules, mod.__name__, mod)
  found = docs.broken_references([pdoc.doc.Module(mod)])
  assert found == [
    "jaxdiff_docs_probe.f: `jaxdiff.samplers.no_such_sampler`",
    "jaxdiff_docs_probe.f: `jaxdiff.gone_module.thing`",
  ]


def test_references_resolve_through_lazy_exports_and_attributes():
  assert docs._resolves("jaxdiff.load")  # the package's lazy export
  assert docs._resolves("jaxdiff.evaluation.evaluate_toy2d")  # jaxdiff.evaluation's lazy exports
  assert docs._resolves("jaxdiff.schedules.Schedule.alphas_cumprod")
  assert not docs._resolves("jaxdiff.schedules.Schedule.no_such_field")


def test_broken_names_in_pages_are_found_with_their_line(tmp_path):
  page = tmp_path / "guide.md"
  page.write_text(
    "# A guide\n\nCall `jaxdiff.sample` and `jaxdiff.processes.EDM`.\n\nNot `jaxdiff.no_such_thing()`.\n"
  )
  assert docs.broken_page_references([page]) == [f"{page}:5: `jaxdiff.no_such_thing`"]


def test_every_guide_and_notebook_is_in_the_site_navigation():
  root = pathlib.Path(__file__).resolve().parents[1]
  nav = (root / "mkdocs.yml").read_text()
  pages = [f"guides/{p.name}" for p in (root / "docs" / "guides").glob("*.md")]
  pages += [f"notebooks/{p.name}" for p in (root / "notebooks").glob("*.py")]
  assert pages and not [p for p in pages if f": {p}" not in nav]


def test_the_pages_and_the_readme_name_only_existing_jaxdiff_objects():
  root = pathlib.Path(__file__).resolve().parents[1]
  assert docs.broken_page_references(docs.doc_pages(root)) == []
