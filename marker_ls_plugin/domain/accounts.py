"""The first admin user of a fresh install."""

from __future__ import annotations

import os
import secrets
from typing import TextIO

from django.conf import settings
from django.db import transaction

DEFAULT_ADMIN_EMAIL = "admin@localhost"


def legacy_token_policy() -> str:
    if settings.LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN:
        return "Legacy API tokens are enabled for new organizations (LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN=true)."
    return ("Legacy API tokens are off (Label Studio's default): use a Personal Access Token from "
            "Account & Settings, or set LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN=true before the first start.")


def ensure_admin(stdout: TextIO) -> None:
    """Create the first superuser and organization when the database has no user yet.

    Credentials come from LABEL_STUDIO_USERNAME / LABEL_STUDIO_PASSWORD (read by the settings
    module); otherwise a password is generated, printed once and kept in a 0600 file.
    """
    from organizations.models import Organization
    from users.models import User

    if User.objects.exists():
        print(legacy_token_policy(), file=stdout)
        return
    email = settings.MARKER_LS_FIRST_ADMIN_EMAIL or DEFAULT_ADMIN_EMAIL
    password = settings.MARKER_LS_FIRST_ADMIN_PASSWORD
    generated = not password
    if generated:
        password = secrets.token_urlsafe(12)
    with transaction.atomic():
        user = User.objects.create_user(email=email, password=password)
        user.is_staff = user.is_superuser = True
        organization = Organization.objects.first() or Organization.create_organization(
            created_by=user, title="Label Studio"
        )
        if organization.created_by_id != user.id:
            organization.add_user(user)
        user.active_organization = organization
        user.save()
    print(f"Created the first admin user: {email}", file=stdout)
    if generated:
        path = os.path.join(settings.BASE_DATA_DIR, "marker_ls", "first-admin.txt")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as handle:
            handle.write(f"email: {email}\npassword: {password}\n")
        print(f"Generated password: {password}  (also in {path}; change it after logging in)", file=stdout)
    print(legacy_token_policy(), file=stdout)
