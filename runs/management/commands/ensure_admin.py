"""Create the first administrator once, so a fresh install has a login."""

from __future__ import annotations

import os
import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser


class Command(BaseCommand):
    help = (
        "Create a superuser if none exists. The password comes from TUNIX_ADMIN_PASSWORD or is "
        "generated and printed once."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--username", default=os.environ.get("TUNIX_ADMIN_USER", "admin"))

    def handle(self, *args: Any, **options: Any) -> None:
        users = get_user_model()
        username: str = options["username"]
        if users.objects.filter(is_superuser=True).exists():
            self.stdout.write("an administrator exists already; its password is unchanged")
            return
        password = os.environ.get("TUNIX_ADMIN_PASSWORD") or secrets.token_urlsafe(12)
        users.objects.create_superuser(username=username, email="", password=password)
        shown = "from TUNIX_ADMIN_PASSWORD" if os.environ.get("TUNIX_ADMIN_PASSWORD") else password
        self.stdout.write(self.style.SUCCESS(f"created administrator {username!r}"))
        self.stdout.write(f"  username: {username}\n  password: {shown}  (shown once)")
