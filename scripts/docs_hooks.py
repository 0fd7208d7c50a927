"""mkdocs hooks of the documentation site (`hooks:` in mkdocs.yml); nothing here is run by hand.

At build time, without writing into the source tree, this adds three kinds of generated files to
the site (mkdocs `File.generated`, so `mkdocs build --strict` checks every link to them):

* the pictures the scripts write under `docs/` (`docs/bench/scaling.png`, `docs/optvis/*.png`,
  `docs/shapes.png`, ...) as `assets/<path under docs/>`: the pages link them there, the scripts
  and the README keep writing and linking them where they are;
* one page per tutorial, `docs/tutorials/<name>.py` (jupytext percent format) rendered as
  `tutorials/<name>.md` (markdown cells as they are, code cells as Python blocks), and the
  figures that running the tutorials wrote (`python scripts/run_tutorials.py`) as
  `tutorials/figures/*.png`;
* the command-line reference, `cli.md`, from the argparse parser of `jaxinterp.cli`
  (`build_parser()`): every subcommand's `--help`, so the page cannot drift from the code.
"""

from __future__ import annotations

import argparse
import os
import pathlib

from mkdocs.structure.files import File

ROOT = pathlib.Path(__file__).resolve().parents[1]
ARTEFACTS = ROOT / "docs"
TUTORIALS = ROOT / "docs" / "tutorials"
SKIP = {"site"}  # the docs sources (docs_dir) are mkdocs' own


def on_files(files, config):
    site_src = pathlib.Path(config["docs_dir"]).resolve()
    for png in sorted(ARTEFACTS.rglob("*.png")):
        if site_src in png.resolve().parents or png.relative_to(ARTEFACTS).parts[0] in SKIP:
            continue
        rel = png.relative_to(ARTEFACTS).as_posix()
        uri = rel if rel.startswith("tutorials/") else f"assets/{rel}"
        files.append(File.generated(config, uri, abs_src_path=str(png)))
    for py in sorted(TUTORIALS.glob("*.py")):
        files.append(File.generated(config, f"tutorials/{py.stem}.md",
                                    content=tutorial_markdown(py)))
    files.append(File.generated(config, "cli.md", content=cli_markdown()))
    return files


def tutorial_markdown(path: pathlib.Path) -> str:
    """A jupytext percent-format script as a page: markdown cells as written, code cells fenced."""
    import jupytext

    notebook = jupytext.read(path)
    parts = []
    for cell in notebook.cells:
        source = cell.source.strip("\n")
        if not source:
            continue
        if cell.cell_type == "markdown":
            parts.append(source)
        else:
            parts.append(f"```python\n{source}\n```")
    rel = path.relative_to(ROOT).as_posix()
    parts.append(f"*This page is `{rel}`, a [jupytext](https://jupytext.readthedocs.io) "
                 "percent-format script: run it with `python`, open it as a notebook with "
                 "jupytext, or run every tutorial with `python scripts/run_tutorials.py` "
                 "(which rewrites the figures above).*")
    return "\n\n".join(parts) + "\n"


def _subcommands(parser: argparse.ArgumentParser, prefix: str):
    for action in parser._actions:  # noqa: SLF001 — argparse keeps subparsers only here
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            helps = {a.dest: a.help for a in action._choices_actions}  # noqa: SLF001
            for name, sub in action.choices.items():
                yield f"{prefix} {name}", helps.get(name), sub
                yield from _subcommands(sub, f"{prefix} {name}")


def cli_markdown() -> str:
    """The command-line reference: the top-level help and every subcommand's `--help`."""
    from jaxinterp import cli

    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"  # argparse wraps help text at $COLUMNS
    try:
        parser = cli.build_parser()
        lines = ["# Command line", "",
                 "Generated from the argparse parser of `jaxinterp.cli` (`build_parser()`) when "
                 "the site is built: each section is the command's `--help`. Exit status: 0 done, "
                 "1 a failure (or some inputs failed), 2 a usage error, 130 interrupted.", "",
                 "```text", parser.format_help().rstrip(), "```", ""]
        overview = (cli.__doc__ or "").split("\n\n")[1] if cli.__doc__ else ""
        if overview.strip():
            lines += ["## Overview", "", "```text", overview.rstrip(), "```", ""]
        for name, summary, sub in _subcommands(parser, "jaxinterp"):
            lines += [f"## `{name}`", ""]
            if summary:
                lines += [summary, ""]
            lines += ["```text", sub.format_help().rstrip(), "```", ""]
        return "\n".join(lines)
    finally:
        if previous is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = previous
