"""Rows for tests, created through Label Studio's own models."""

from __future__ import annotations

import itertools

_counter = itertools.count()


def make_user():
    from organizations.models import Organization
    from users.models import User

    n = next(_counter)
    user = User.objects.create_user(email=f"user{n}-{id(_counter)}@example.com", password="pw-for-tests")
    organization = Organization.create_organization(created_by=user, title=f"Org {n}")
    user.active_organization = organization
    user.save()
    return user


def make_project(title: str, user=None):
    from projects.models import Project

    user = user or make_user()
    return Project.objects.create(title=title, created_by=user, organization=user.active_organization)
