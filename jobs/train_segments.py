"""spark-submit entry point: choose k, train, register, assign and profile segments."""

from __future__ import annotations

from collections.abc import Sequence

from segmentation import cli, pipeline


def main(argv: Sequence[str] | None = None) -> int:
    args = cli.parser("Train customer segments and write membership and profiles").parse_args(argv)

    def body(spark, cfg):  # type: ignore[no-untyped-def]
        result = pipeline.train_segments(spark, cfg)
        print(pipeline.format_training_summary(result, cfg))

    return cli.run(args, body)


if __name__ == "__main__":
    cli.exit_with(main)
