"""tinywindow.throttling.ContentNegotiation answers exactly what DRF's DefaultContentNegotiation
answers; it only skips the parsing when the answer cannot depend on it."""

from __future__ import annotations

import pytest
from django.http import Http404
from rest_framework.exceptions import NotAcceptable
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BrowsableAPIRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory

from tinywindow.api import FastJSONRenderer
from tinywindow.throttling import ContentNegotiation

RENDERER_SETS = [[FastJSONRenderer(), BrowsableAPIRenderer()], [JSONRenderer()],
                 [BrowsableAPIRenderer(), JSONRenderer()]]


def _choice(negotiation, path: str, accept: str | None, renderers, suffix: str | None):
    headers = {} if accept is None else {"HTTP_ACCEPT": accept}
    request = Request(APIRequestFactory().get(path, **headers))
    try:
        renderer, media_type = negotiation.select_renderer(request, renderers, suffix)
    except NotAcceptable:
        return "406"
    except Http404:  # an unknown ?format=
        return "404"
    return type(renderer), media_type


@pytest.mark.parametrize("renderers", RENDERER_SETS)
@pytest.mark.parametrize("accept", [None, "*/*", "", "application/json", "application/json; indent=4", "text/html",
                                    "text/html,application/xhtml+xml,*/*;q=0.8", "image/png", "*/*; q=0.1",
                                    "application/*"])
@pytest.mark.parametrize(("path", "suffix"), [("/api/status", None), ("/api/status?format=json", None),
                                              ("/api/status?format=api", None), ("/api/status?format=", None),
                                              ("/api/status?format=xml", None), ("/api/status", "json")])
def test_the_same_renderer_and_media_type_as_drf(renderers, accept, path, suffix):
    assert _choice(ContentNegotiation(), path, accept, renderers, suffix) == \
        _choice(DefaultContentNegotiation(), path, accept, renderers, suffix)


def test_the_usual_request_is_answered_without_parsing(monkeypatch):
    monkeypatch.setattr(DefaultContentNegotiation, "select_renderer", lambda *a, **k: pytest.fail("parsed"))
    request = Request(APIRequestFactory().get("/api/orders/", HTTP_ACCEPT="*/*"))

    renderer, media_type = ContentNegotiation().select_renderer(request, RENDERER_SETS[0])

    assert isinstance(renderer, FastJSONRenderer) and media_type == "application/json"
