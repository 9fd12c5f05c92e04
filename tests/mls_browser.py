"""A Django test client logged in the way Label Studio's middleware accepts, sending a valid CSRF token."""

from __future__ import annotations

import time

from django.conf import settings
from django.middleware.csrf import _get_new_csrf_string
from django.test import Client


def logged_in(user) -> Client:
    """A browser session of ``user``; with the token, only the check under test can refuse a request."""
    token = _get_new_csrf_string()
    client = Client(HTTP_X_CSRFTOKEN=token)
    client.cookies[settings.CSRF_COOKIE_NAME] = token
    client.force_login(user)
    session = client.session
    session["last_login"] = time.time()  # Label Studio's session policy logs out sessions without it
    session.save()
    client.cookies[settings.SESSION_COOKIE_NAME] = session.session_key  # signed cookies: the key is the data
    return client
