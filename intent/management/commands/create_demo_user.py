"""Create (or reuse) the demo superuser and its API token, and print both."""

import os

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from rest_framework.authtoken.models import Token


class Command(BaseCommand):
    help = "Create the demo superuser and API token if missing (idempotent) and print them."

    def add_arguments(self, parser):
        parser.add_argument("--username", default=os.environ.get("DEMO_USERNAME", "admin"))
        parser.add_argument("--password", default=os.environ.get("DEMO_PASSWORD", "admin"))

    def handle(self, *args, **options):
        user, created = get_user_model().objects.get_or_create(
            username=options["username"], defaults={"is_staff": True, "is_superuser": True}
        )
        if created:
            user.set_password(options["password"])
            user.save()
        token, _ = Token.objects.get_or_create(user=user)
        state = "created" if created else "exists (password unchanged)"
        self.stdout.write(f"Demo superuser: {user.username} / {options['password'] if created else '***'} [{state}]")
        self.stdout.write(f"API token: {token.key}")
