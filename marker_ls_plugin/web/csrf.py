"""CSRF protection for the plugin's state-changing views, whatever Label Studio's middleware says.

Label Studio's ``core.middleware.DisableCSRF`` sets ``request._dont_enforce_csrf_checks`` on every request,
which makes Django's ``CsrfViewMiddleware``, ``csrf_protect`` (the admin's) and DRF's ``SessionAuthentication``
accept any request. :func:`csrf_failure` runs Django's own check (Origin, Referer under HTTPS, the token) with
that flag set aside; pages (:func:`csrf_enforced`), the API (:class:`SessionAuthentication`) and the admin
(``admin.CsrfEnforcedAdmin``) all go through it. Requests authenticated by a header (``Authorization: Token``
or Label Studio's JWT ``Bearer``) carry no ambient credential and are left as Label Studio treats them.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.urls import get_callable
from rest_framework import authentication, exceptions
from rest_framework.settings import api_settings

# What Label Studio's middleware (and Django's, once it accepted) leave on the request to skip the check.
_SKIP_FLAGS = ("_dont_enforce_csrf_checks", "csrf_processing_done")


class _Check(CsrfViewMiddleware):
    def _reject(self, request: HttpRequest, reason: str) -> str:  # type: ignore[override]
        return reason  # the reason instead of a response: the callers answer in their own format


def csrf_failure(request: HttpRequest) -> str | None:
    """Why ``request`` fails Django's CSRF check, or None when it passes (safe methods always do)."""
    if getattr(request, "is_jwt", False):  # authenticated by Label Studio's JWT middleware from a header
        return None
    saved = {name: request.__dict__.pop(name) for name in _SKIP_FLAGS if name in request.__dict__}
    check = _Check(lambda _request: None)
    try:
        check.process_request(request)
        return check.process_view(request, None, (), {})
    finally:
        request.__dict__.update(saved)


def csrf_enforced(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Answer Django's CSRF failure page (403) to an unsafe request without a valid token or origin."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        reason = csrf_failure(request)
        if reason:
            return get_callable(settings.CSRF_FAILURE_VIEW)(request, reason=reason)
        return view(request, *args, **kwargs)

    return wrapped


class SessionAuthentication(authentication.SessionAuthentication):
    """DRF's session authentication with the CSRF check Label Studio's middleware switched off."""

    def enforce_csrf(self, request: Any) -> None:
        reason = csrf_failure(request._request)
        if reason:
            raise exceptions.PermissionDenied(f"CSRF Failed: {reason}")


def api_authentication_classes() -> list[type]:
    """Label Studio's API authentication classes, in order, with session authentication enforcing CSRF."""
    return [SessionAuthentication if issubclass(cls, authentication.SessionAuthentication) else cls
            for cls in api_settings.DEFAULT_AUTHENTICATION_CLASSES]
