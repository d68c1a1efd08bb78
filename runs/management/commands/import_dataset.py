"""python manage.py import_dataset FILE --key name-v1 [--reasoning include|omit]"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from runs import selectors, services
from runs.datasets import REASONING_CHOICES, REASONING_INCLUDE


class Command(BaseCommand):
    help = "Validate a JSONL dataset file and register it under a key (name-version)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", type=Path, help="JSONL file to import")
        parser.add_argument("--key", required=True, help="dataset key, e.g. my-data-v1")
        parser.add_argument(
            "--reasoning",
            choices=REASONING_CHOICES,
            default=REASONING_INCLUDE,
            help="reasoning-trace files (prompt, final_answer, steps): include the steps before "
            "the final answer in each completion, or omit them (default: %(default)s)",
        )
        parser.add_argument(
            "--skip-existing",
            action="store_true",
            help="succeed without changes when the key is already registered",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        path: Path = options["file"]
        key: str = options["key"]
        if options["skip_existing"] and selectors.dataset_get(key=key) is not None:
            self.stdout.write(f"dataset {key} already registered; nothing to do")
            return
        if not path.is_file():
            raise CommandError(f"{path}: no such file")
        try:
            with path.open("rb") as handle:
                dataset = services.dataset_import(
                    key=key, source=handle, reasoning=options["reasoning"]
                )
        except services.ServiceError as exc:
            raise CommandError(f"{path}: {exc.message}") from None
        self.stdout.write(
            self.style.SUCCESS(
                f"imported {dataset.key}: {dataset.record_count} records ({dataset.format}), "
                f"{dataset.size_bytes} bytes, sha256 {dataset.sha256}"
            )
        )
