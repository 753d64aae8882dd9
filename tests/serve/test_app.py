"""The service's HTTP API (retrieval/serve/app.py) through FastAPI's test client, on a real
small bundle: search, add, remove, thumbnails, health, and each bad request."""
from __future__ import annotations

import struct
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient
from serve_helpers import N_REFS, jpeg, photo, ref_id

from retrieval.bundle import FORMAT_VERSION
from retrieval.serve.app import create_app

MB = 2**20


def upload(data: bytes, name: str = "photo.jpg") -> dict:
    return {"image": (name, data, "image/jpeg")}


def ids(response) -> list[str]:
    assert response.status_code == 200, response.text
    return [hit["id"] for hit in response.json()["results"]]


@pytest.fixture(scope="module")
def client(built_bundle):
    """A client of the service over the shared bundle (tests with it do not change the bundle)."""
    return TestClient(create_app(built_bundle, 8 * MB))


@pytest.fixture
def own_client(bundle_copy):
    """A client of the service over a private copy of the bundle, for tests that change it."""
    return TestClient(create_app(bundle_copy, 8 * MB))


def bomb_png(side: int = 40_000) -> bytes:
    """A PNG header declaring ``side`` x ``side`` pixels (1.6 G: past Pillow's bomb limit)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_health_counts_the_references(client, built_bundle):
    body = client.get("/health").json()
    assert body["status"] == "ok"
    assert body["references"] == N_REFS
    assert body["format_version"] == FORMAT_VERSION


@pytest.mark.parametrize("n", [0, 3])
def test_search_finds_the_reference_itself_first(client, n):
    response = client.post("/search", files=upload(jpeg(photo(n))))
    found = ids(response)
    assert found[0] == ref_id(n)
    assert len(found) == min(10, N_REFS) and len(set(found)) == len(found)
    scores = [hit["score"] for hit in response.json()["results"]]
    assert scores == sorted(scores, reverse=True)


def test_k_from_the_form_or_the_query(client):
    assert len(ids(client.post("/search", files=upload(jpeg(photo(1))), data={"k": "2"}))) == 2
    assert len(ids(client.post("/search?k=3", files=upload(jpeg(photo(1)))))) == 3
    assert len(ids(client.post("/search?k=1000", files=upload(jpeg(photo(1)))))) == N_REFS


@pytest.mark.parametrize("k, status", [("0", 400), ("-1", 400), ("many", 422)])
def test_bad_k_is_refused(client, k, status):
    response = client.post("/search", files=upload(jpeg(photo(1))), data={"k": k})
    assert response.status_code == status
    assert "k" in response.json()["error"]


def test_missing_image_field_is_422_naming_it(client):
    response = client.post("/search", data={"k": "3"})
    assert response.status_code == 422
    assert "image" in response.json()["error"]


@pytest.mark.parametrize("data, fault", [
    (b"hello, not a picture", "decode"),
    (jpeg(photo(0))[:300], "decode"),  # a JPEG cut short
    (b"", "empty upload"),
])
def test_bad_upload_is_400_naming_the_file_and_fault(client, data, fault):
    response = client.post("/search", files=upload(data))
    assert response.status_code == 400
    message = response.json()["error"]
    assert message.startswith("photo.jpg: ") and fault in message and "\n" not in message


def test_decompression_bomb_is_refused(client):
    response = client.post("/search", files=upload(bomb_png(), "bomb.png"))
    assert response.status_code == 400
    message = response.json()["error"]
    assert "bomb.png" in message and "bomb" in message.replace("bomb.png", "")


def test_add_then_search_finds_it_first(own_client):
    new = jpeg(photo(100))
    response = own_client.post("/references", files=upload(new), data={"id": "new-one"})
    assert response.status_code == 201, response.text
    assert response.json() == {"added": ["new-one"], "references": N_REFS + 1}
    assert ids(own_client.post("/search", files=upload(new)))[0] == "new-one"
    assert own_client.get("/health").json()["references"] == N_REFS + 1
    thumb = own_client.get("/references/new-one/thumbnail")
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    assert thumb.content[:2] == b"\xff\xd8"


def test_add_several_at_once(own_client):
    files = [("image", ("a.jpg", jpeg(photo(101)), "image/jpeg")), ("image", ("b.jpg", jpeg(photo(102)), "image/jpeg"))]
    response = own_client.post("/references", files=files, data={"id": ["a", "b"]})
    assert response.status_code == 201, response.text
    assert ids(own_client.post("/search", files=upload(jpeg(photo(102)))))[0] == "b"


@pytest.mark.parametrize("data, status, fault", [
    ({"id": ref_id(2)}, 409, "already"),
    ({"id": ["x", "y"]}, 400, "one id per image"),
    ({}, 422, "id"),
])
def test_bad_add_is_refused_and_changes_nothing(own_client, data, status, fault):
    response = own_client.post("/references", files=upload(jpeg(photo(100))), data=data)
    assert response.status_code == status
    assert fault in response.json()["error"]
    assert own_client.get("/health").json()["references"] == N_REFS


def test_add_of_a_non_image_is_400(own_client):
    response = own_client.post("/references", files=upload(b"GIF89a but not really", "x.gif"), data={"id": "x"})
    assert response.status_code == 400 and "x.gif" in response.json()["error"]
    assert own_client.get("/health").json()["references"] == N_REFS


def test_delete_then_search_never_returns_it(own_client):
    gone = ref_id(4)
    assert own_client.delete(f"/references/{gone}").status_code == 200
    found = ids(own_client.post("/search?k=1000", files=upload(jpeg(photo(4)))))
    assert gone not in found and len(found) == N_REFS - 1
    assert own_client.get(f"/references/{gone}/thumbnail").status_code == 404
    again = own_client.delete(f"/references/{gone}")
    assert again.status_code == 404 and gone in again.json()["error"]


def test_unknown_thumbnail_is_404(client):
    assert client.get("/references/nobody/thumbnail").status_code == 404
    assert client.get(f"/references/{ref_id(0)}/thumbnail").content[:2] == b"\xff\xd8"


def test_page_is_served_with_no_outside_resources(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert 'type="file"' in page.text and "/search" in page.text
    assert "http://" not in page.text and "https://" not in page.text  # no CDN: all served here


def test_searches_during_an_add_see_the_old_or_the_new_index(bundle_copy):
    """8 threads search while a reference is added: every answer is exactly the old ranking or the
    new one (never a mix, never an error), and once a thread has seen the new one it never sees
    the old again."""
    own_client = TestClient(create_app(bundle_copy, 8 * MB), raise_server_exceptions=False)
    query = jpeg(photo(3))
    old = own_client.post("/search?k=1000", files=upload(query)).json()["results"]
    seen: list[list[list]] = [[] for _ in range(8)]
    errors: list[str] = []
    added = threading.Event()
    started = threading.Barrier(9)

    def searcher(n: int) -> None:
        started.wait()
        after = 0
        while after < 3:  # keep searching until 3 answers came after the add finished
            done = added.is_set()
            response = own_client.post("/search?k=1000", files=upload(query))
            if response.status_code != 200:
                errors.append(f"{response.status_code}: {response.text[:200]}")
            else:
                seen[n].append(response.json()["results"])
            after += done
    threads = [threading.Thread(target=searcher, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    started.wait()
    response = own_client.post("/references", files=upload(jpeg(photo(3).rotate(5))), data={"id": "near-3"})
    added.set()
    for t in threads:
        t.join()
    assert response.status_code == 201 and errors == []
    new = own_client.post("/search?k=1000", files=upload(query)).json()["results"]
    assert "near-3" in [hit["id"] for hit in new] and len(new) == len(old) + 1
    for answers in seen:
        kinds = ["old" if a == old else "new" if a == new else "mixed" for a in answers]
        assert "mixed" not in kinds
        assert "old" not in kinds[kinds.index("new"):] if "new" in kinds else True
        assert kinds[-1] == "new"


@pytest.mark.parametrize("allowed", [1, 3])
def test_at_most_the_allowed_searches_run_at_once(bundle_copy, allowed):
    app = create_app(bundle_copy, 8 * MB, concurrent_searches=allowed)
    service, lock, running, most = app.state.service, threading.Lock(), [0], [0]
    real = service.current.search

    def slow_search(images, k):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.05)  # long enough for the other threads' requests to arrive meanwhile
        with lock:
            running[0] -= 1
        return real(images, k)
    service.current.search = slow_search
    client = TestClient(app)
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: client.post("/search", files=upload(jpeg(photo(1)))), range(16)))
    assert all(a.status_code == 200 for a in answers)
    assert most[0] == allowed
