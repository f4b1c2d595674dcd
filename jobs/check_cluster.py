"""spark-submit entry point: show where executors import the library from (JSON)."""

from __future__ import annotations

import json
from collections.abc import Sequence

from segmentation import cli, diagnostics


def main(argv: Sequence[str] | None = None) -> int:
    args = cli.parser("Check that executors import the shipped segmentation library").parse_args(
        argv
    )

    def body(spark, cfg):  # type: ignore[no-untyped-def]
        print(json.dumps(diagnostics.executor_library_origins(spark)))

    return cli.run(args, body)


if __name__ == "__main__":
    cli.exit_with(main)
