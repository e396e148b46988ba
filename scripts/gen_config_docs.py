"""Write docs/config.md, the configuration reference, from the config schema.

python scripts/gen_config_docs.py          # rewrite docs/config.md
python scripts/gen_config_docs.py --check  # exit 1 if docs/config.md is out of date
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from napari_cellseg_trainer._schema import Kind
from napari_cellseg_trainer.config import PredictConfig, TrainConfig, fields

TARGET = Path(__file__).resolve().parents[1] / "docs" / "config.md"


def _table(cls: type) -> list[str]:
    lines = ["| key | kind | type | default | help |", "|---|---|---|---|---|"]
    for spec in fields(cls):
        default = "null" if spec.default is None else f"`{spec.default}`"
        text = spec.help.replace("|", "\\|").replace("\n", " ")
        lines.append(
            f"| `{spec.key}` | {spec.kind.value} | {spec.vtype.describe()} | {default} | {text} |"
        )
    return lines


def render() -> str:
    kinds = "\n".join(f"- {k.value} {k.meaning}" for k in Kind)
    parts = [
        "# Configuration reference",
        "",
        "Generated from the schema in `src/napari_cellseg_trainer/config.py` by",
        "`python scripts/gen_config_docs.py`; do not edit by hand (CI checks it is up to date).",
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    text = render()
    if args.check:
        if not TARGET.exists() or TARGET.read_text(encoding="utf-8") != text:
            print(
                f"{TARGET} is out of date: run python scripts/gen_config_docs.py", file=sys.stderr
            )
            return 1
        return 0
    TARGET.write_text(text, encoding="utf-8")
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
