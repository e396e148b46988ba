"""Write the references generated from the code: docs/config.md (from the config schema) and
docs/cli.md (from the command line's parser).

python scripts/gen_docs.py          # rewrite them
python scripts/gen_docs.py --check  # exit 1 if one is out of date (CI runs this)
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from napari_cellseg_trainer.cli import build_parser
from napari_cellseg_trainer.config import Kind, PredictConfig, TrainConfig, fields

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _table(cls: type) -> list[str]:
    lines = ["| key | kind | type | default | help |", "|---|---|---|---|---|"]
    for spec in fields(cls):
        default = "null" if spec.default is None else f"`{spec.default}`"
        text = spec.help.replace("|", "\\|").replace("\n", " ")
        lines.append(
            f"| `{spec.key}` | {spec.kind.value} | {spec.vtype.describe()} | {default} | {text} |"
        )
    return lines


def render_config() -> str:
    kinds = "\n".join(f"- {k.value} {k.meaning}" for k in Kind)
    parts = [
        "# Configuration reference",
        "",
        "Generated from the schema in `src/napari_cellseg_trainer/config/` by",
        "`python scripts/gen_docs.py`; do not edit by hand (CI checks it is up to date).",
        "",
        "Every field has one of three kinds:",
        "",
        kinds,
        "",
        "## Training config",
        "",
        *_table(TrainConfig),
        "",
        "## Prediction config",
        "",
        *_table(PredictConfig),
        "",
    ]
    return "\n".join(parts)


def render_cli() -> str:
    os.environ["COLUMNS"] = "100"  # argparse wraps help at the terminal's width: fix it
    os.environ["NO_COLOR"] = "1"
    parser = build_parser()
    parser.prog = "cellseg-trainer"
    parts = [
        "# Command-line reference",
        "",
        "Generated from the parser by `python scripts/gen_docs.py`; do not edit by hand.",
        "Every command exits 0 on success and 2, with one line per problem, on bad input.",
        "",
        "```text",
        parser.format_help().rstrip(),
        "```",
        "",
    ]
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, command in sub.choices.items():
        parts += [f"## cellseg-trainer {name}", "", "```text", command.format_help().rstrip()]
        parts += ["```", ""]
        nested = [a for a in command._actions if isinstance(a, argparse._SubParsersAction)]
        for action in nested:
            for inner_name, inner in action.choices.items():
                parts += [f"### cellseg-trainer {name} {inner_name}", "", "```text"]
                parts += [inner.format_help().rstrip(), "```", ""]
    return "\n".join(parts)


TARGETS = {"config.md": render_config, "cli.md": render_cli}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    stale = []
    for name, render in TARGETS.items():
        target, text = DOCS / name, render()
        if args.check:
            if not target.exists() or target.read_text(encoding="utf-8") != text:
                stale.append(name)
            continue
        target.write_text(text, encoding="utf-8")
        print(f"wrote {target}")
    if stale:
        print(
            f"docs/{', docs/'.join(stale)} out of date: run python scripts/gen_docs.py",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
