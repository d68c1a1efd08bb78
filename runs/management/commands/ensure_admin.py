"""Create the first administrator once, so a fresh install has a login; say how to get back in
when its password is lost."""

from __future__ import annotations

import os
import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser

RESET_ENV = "TUNIX_ADMIN_RESET"


class Command(BaseCommand):
    help = (
        "Create a superuser if none exists. The password comes from TUNIX_ADMIN_PASSWORD or is "
        "generated and printed once. With TUNIX_ADMIN_RESET=1 (or --reset), an existing "
        "administrator gets a new password the same way."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--username", default=os.environ.get("TUNIX_ADMIN_USER", "admin"))
        parser.add_argument(
            "--reset",
            action="store_true",
            default=os.environ.get(RESET_ENV) == "1",
            help=f"give the existing administrator a new password (or set {RESET_ENV}=1)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        users = get_user_model()
        username: str = options["username"]
        admins = users.objects.filter(is_superuser=True).order_by("pk")
        if not admins.exists():
            password = self._password()
            users.objects.create_superuser(username=username, email="", password=password)
            self.stdout.write(self.style.SUCCESS(f"created administrator {username!r}"))
            self._show(username, password)
            return
        # The one named (if it is an administrator), else the first one made.
        admin = admins.filter(username=username).first() or admins.first()
        assert admin is not None
        name = admin.get_username()
        if options["reset"]:
            password = self._password()
            admin.set_password(password)
            admin.save(update_fields=["password"])
            self.stdout.write(self.style.SUCCESS(f"new password for administrator {name!r}"))
            self._show(name, password)
            return
        # Printed on every `make run`: the one place a user who lost the password looks.
        self.stdout.write(
            f"an administrator exists already ({name}); its password is unchanged.\n"
            f"  lost it? python manage.py changepassword {name}\n"
            f"  or run this again with {RESET_ENV}=1 (e.g. `{RESET_ENV}=1 make run`) for a new "
            "one, taken from TUNIX_ADMIN_PASSWORD or generated and shown once"
        )

    @staticmethod
    def _password() -> str:
        return os.environ.get("TUNIX_ADMIN_PASSWORD") or secrets.token_urlsafe(12)

    def _show(self, username: str, password: str) -> None:
        shown = "from TUNIX_ADMIN_PASSWORD" if os.environ.get("TUNIX_ADMIN_PASSWORD") else password
        self.stdout.write(f"  username: {username}\n  password: {shown}  (shown once)")
