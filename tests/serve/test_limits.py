"""The request body limit (retrieval/serve/limits.py): 413 over it, declared or streamed; the body
passed through whole under it."""
from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from serve_helpers import jpeg, photo

from retrieval.serve.app import create_app
from retrieval.serve.limits import BodyLimit

LIMIT = 1000


async def echo(request: Request) -> JSONResponse:
    return JSONResponse({"got": len(await request.body())})


@pytest.fixture(scope="module")
def client():
    app = Starlette(routes=[Route("/", echo, methods=["POST", "GET"])])
    return TestClient(BodyLimit(app, LIMIT))


@pytest.mark.parametrize("size", [0, 1, LIMIT])
def test_a_body_within_the_limit_reaches_the_app_whole(client, size):
    assert client.post("/", content=b"x" * size).json() == {"got": size}


def test_a_declared_length_over_the_limit_is_413(client):
    response = client.post("/", content=b"x" * (LIMIT + 1))
    assert response.status_code == 413
    assert "too large" in response.json()["error"]


def test_a_streamed_body_with_no_length_is_cut_at_the_limit(client):
    chunks = (b"x" * 300 for _ in range(5))  # 1,500 bytes, sent chunked: no Content-Length
    response = client.post("/", content=chunks)
    assert response.status_code == 413


def test_a_streamed_body_within_the_limit_is_whole(client):
    assert client.post("/", content=(b"y" * 250 for _ in range(4))).json() == {"got": LIMIT}


def test_a_get_is_not_read(client):
    assert client.get("/").json() == {"got": 0}


def test_the_service_refuses_a_big_upload_with_413_naming_the_limit(built_bundle):
    service = TestClient(create_app(built_bundle, max_upload_bytes=2**20))
    big = jpeg(photo(0, size=2000))  # a noisy-free 2000 px JPEG is small: pad it past 1 MB
    response = service.post("/search", files={"image": ("big.jpg", big + b"\0" * 2**20, "image/jpeg")})
    assert response.status_code == 413
    assert "1 MB" in response.json()["error"]
    assert service.post("/search", files={"image": ("ok.jpg", big, "image/jpeg")}).status_code == 200
