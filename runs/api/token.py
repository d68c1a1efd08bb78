"""POST /api/auth/token: a token for a username and password, behind login throttling.

Apart from the authentication classes (runs.api.authentication), which DRF's settings import:
this view imports DRF's views, which import those settings.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import authenticate
from django.contrib.auth.models import User
from rest_framework import serializers
from rest_framework.authtoken.serializers import AuthTokenSerializer
from rest_framework.authtoken.views import ObtainAuthToken


class TokenRequestSerializer(AuthTokenSerializer):
    """DRF's token login, authenticating with the underlying Django request: login throttling
    (django-axes) marks a locked-out client on that request, where its middleware looks."""

    # No username is longer than the user model allows; a longer one is refused here, before
    # login throttling records it (its attempt log's column is no wider).
    username = serializers.CharField(
        label="Username", write_only=True, max_length=User.username.field.max_length or 150
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        request = self.context["request"]
        user = authenticate(
            request=getattr(request, "_request", request),
            username=attrs.get("username"),
            password=attrs.get("password"),
        )
        if user is None:
            raise serializers.ValidationError(
                "Unable to log in with provided credentials.", code="authorization"
            )
        attrs["user"] = user
        return attrs


class TokenLoginView(ObtainAuthToken):
    serializer_class = TokenRequestSerializer
