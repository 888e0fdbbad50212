"""The HTTP API of ``facestream serve`` (a real server on 127.0.0.1, real weights, real photos): recognising
uploads, enrolling, renaming and erasing people, JSON errors, the token, upload limits and metrics."""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import subprocess

import pytest
import requests
from http_helpers import CLI, REPO, Served
from prometheus_client.parser import text_string_to_metric_families

TOKEN = "t0k3n-for-the-api-tests"
STILLS = "face_recognition_examples/stills"


@pytest.fixture(scope="module")
def served(tmp_path_factory, stills_gallery):
    """``facestream serve`` on a copy of the stills gallery, with an API token and a 1 MB upload limit."""
    tmp = tmp_path_factory.mktemp("serve")
    gallery = tmp / "gallery.db"
    shutil.copy(stills_gallery, gallery)
    s = Served(["serve", "--gallery", str(gallery)], tmp / "serve.log", token=TOKEN,
               env={"FACESTREAM_HTTP__MAX_UPLOAD_MB": "1"})
    s.gallery = gallery
    yield s
    code, took = s.stop()
    assert code == 0 and took < 5.0, s.log.read_text()[-2000:]


def _photo(data_dir, name: str) -> bytes:
    return (data_dir / name).read_bytes()


def _error(r: requests.Response, status: int) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"]["status"] == status
    assert body["error"]["message"] and "\n" not in body["error"]["message"]
    return body["error"]["message"]


def test_two_people_are_obama_left_and_biden_right_with_boxes(served, data_dir) -> None:
    r = served.post("/v1/recognize", data=_photo(data_dir, f"{STILLS}/two_people.jpg"),
                    headers={"Content-Type": "image/jpeg"})
    assert r.status_code == 200, r.text
    body = r.json()
    faces = sorted(body["faces"], key=lambda f: f["box"][0])
    assert [f["identity"] for f in faces] == ["barack_obama", "joe_biden"]
    for f in faces:
        x1, y1, x2, y2 = f["box"]
        assert 0 <= x1 < x2 <= body["width"] and 0 <= y1 < y2 <= body["height"]
        assert x2 - x1 > 60 and len(f["landmarks"]) == 5
        assert f["decision"] == "recognized" and f["score"] >= body["threshold"]
        assert f["margin"] >= body["margin_required"]
        assert f["candidates"][0]["identity"] == f["identity"]
    assert faces[0]["box"][2] < faces[1]["box"][0]  # Obama's box ends left of Biden's
    # The same photo as a form upload (what the page and curl -F send) gives the same answer.
    form = served.post("/v1/recognize", files={"photo": ("two_people.jpg", _photo(data_dir, f"{STILLS}/two_people.jpg"),
                                                         "image/jpeg")})
    assert [f["identity"] for f in sorted(form.json()["faces"], key=lambda f: f["box"][0])] == [
        "barack_obama", "joe_biden"]


def test_recognize_with_liveness_scores_each_face(served, data_dir) -> None:
    """Upstream's samples: T1 is a live face, F1 a print; without ?liveness=1 no score is computed."""
    plain = served.post("/v1/recognize", files={"photo": ("t1.jpg", _photo(data_dir, "liveness/models/samples/"
                                                                           "image_T1.jpg"))}).json()
    assert plain["faces"] and "live_score" not in plain["faces"][0]
    scores = {}
    for name in ("T1", "F1"):
        r = served.post("/v1/recognize?liveness=1", files={"photo": (f"{name}.jpg", _photo(
            data_dir, f"liveness/models/samples/image_{name}.jpg"))})
        assert r.status_code == 200, r.text
        face = r.json()["faces"][0]
        scores[name] = (face["live_score"], face["live"])
    assert scores["T1"][1] is True and scores["F1"][1] is False, scores


def test_a_cat_has_no_faces_and_a_text_file_is_a_json_error(served, data_dir) -> None:
    r = served.post("/v1/recognize", files={"photo": ("cat.jpg", _photo(data_dir, "images_misc/no_faces/cat.jpg"))})
    assert r.status_code == 200 and r.json()["faces"] == []
    text = (REPO / "pyproject.toml").read_bytes()
    assert "not an image" in _error(served.post("/v1/recognize", files={"photo": ("notes.txt", text)}), 422)
    assert "not text/plain" in _error(served.post("/v1/recognize", data=text,
                                                  headers={"Content-Type": "text/plain"}), 415)
    assert "exactly one photo" in _error(served.post("/v1/recognize", data=b"",
                                                     headers={"Content-Type": "image/jpeg"}), 422)


def test_an_upload_over_the_limit_is_413_before_it_is_read(served) -> None:
    big = b"\xff\xd8" + bytes(1024 * 1024 + 10)
    assert "limit" in _error(served.post("/v1/recognize", data=big, headers={"Content-Type": "image/jpeg"}), 413)
    assert "limit" in _error(served.request("PATCH", "/v1/identities/joe_biden", data=b"{" + bytes(1024 * 1024 + 10),
                                            headers={"Content-Type": "application/json"}), 413)


def test_the_token_is_required_and_checked(served) -> None:
    plain = requests.get(served.base + "/v1/status", timeout=10)
    assert "token" in _error(plain, 401)
    assert plain.headers["www-authenticate"] == "Bearer"
    _error(requests.get(served.base + "/v1/identities", headers={"Authorization": "Bearer wrong-token-123456"},
                       timeout=10), 401)
    # ?access_token= only where a browser cannot send headers (EventSource, <img>): never on other routes.
    assert requests.get(served.base + f"/v1/status?access_token={TOKEN}", timeout=10).status_code == 401
    stream = requests.get(served.base + f"/v1/events?access_token={TOKEN}", stream=True, timeout=10)
    assert stream.status_code == 200 and stream.headers["content-type"].startswith("text/event-stream")
    stream.close()
    # The page itself loads without the token (it asks for it), and sends no script from elsewhere.
    page = requests.get(served.base + "/", timeout=10)
    assert page.status_code == 200 and "<title>facestream</title>" in page.text
    assert page.headers["content-security-policy"].startswith("default-src 'self'")
    for name in ("index.html", "app.js", "app.css"):  # works offline: nothing refers to another host
        body = requests.get(f"{served.base}/{name}", timeout=10).text
        assert len(body) > 500 and "://" not in body, name


def test_enrol_rename_and_erase_a_person(served, data_dir) -> None:
    photo = _photo(data_dir, "face_recognition_examples/knn_examples/train/rose_leslie/img1.jpg")
    cat = _photo(data_dir, "images_misc/no_faces/cat.jpg")
    r = served.post("/v1/identities/rose_leslie/photos",
                    files=[("photos", ("rose.jpg", photo)), ("photos", ("cat.jpg", cat)),
                           ("photos", ("notes.txt", b"not a photo"))])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["added"] == 1 and body["rejected"] == 2
    reasons = {p["photo"]: p["reason"] for p in body["photos"]}
    assert reasons == {"rose.jpg": None, "cat.jpg": "no face detected", "notes.txt": "not an image"}
    people = {p["name"]: p for p in served.get("/v1/identities").json()["identities"]}
    assert people["rose_leslie"]["templates"] == 1 and people["rose_leslie"]["photos"] == ["upload:rose.jpg"]
    # Enrolling the same photo again adds nothing, and says why.
    again = served.post("/v1/identities/rose_leslie/photos", files={"p": ("rose.jpg", photo)})
    assert _error(again, 422) and again.json()["error"]["photos"][0]["reason"] == "already enrolled"
    # The daemon answers with the new gallery at once.
    probe = _photo(data_dir, "face_recognition_examples/knn_examples/train/rose_leslie/img2.jpg")
    assert served.post("/v1/recognize", data=probe).json()["faces"][0]["identity"] == "rose_leslie"

    assert "already exists" in _error(served.request("PATCH", "/v1/identities/rose_leslie",
                                                     json={"name": "barack_obama"}), 409)
    assert served.request("PATCH", "/v1/identities/rose_leslie", json={"name": "rose"}).status_code == 200
    assert served.post("/v1/recognize", data=probe).json()["faces"][0]["identity"] == "rose"

    gone = served.delete("/v1/identities/rose")
    assert gone.status_code == 200 and gone.json()["templates"] == 1
    assert "no identity named 'rose'" in _error(served.delete("/v1/identities/rose"), 404)
    assert served.post("/v1/recognize", data=probe).json()["faces"][0]["identity"] is None
    with sqlite3.connect(served.gallery) as conn:
        assert conn.execute("SELECT COUNT(*) FROM templates WHERE path = 'upload:rose.jpg'").fetchone()[0] == 0
        assert conn.execute("SELECT COUNT(*) FROM identities WHERE name IN ('rose', 'rose_leslie')").fetchone()[0] == 0


@pytest.mark.parametrize("name", ["../etc", "a/b", " ", "x" * 65, "-dash-first", "tab\there"])
def test_bad_names_are_refused(served, data_dir, name: str) -> None:
    r = served.post(f"/v1/identities/{requests.utils.quote(name, safe='')}/photos",
                    data=_photo(data_dir, f"{STILLS}/biden.jpg"))
    assert r.status_code in (404, 422), r.text  # a '/' never reaches the route; everything else is a 422
    _error(r, r.status_code)
    assert all(p["name"] != name.strip() for p in served.get("/v1/identities").json()["identities"])


def test_metrics_parse_and_docs_are_served(served) -> None:
    text = served.get("/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["facestream_gallery_identities"].samples[0].value == 4
    assert "facestream_frame_latency_seconds" in families
    assert served.get("/docs").status_code == 404  # Swagger UI would load from a CDN; the spec stays
    paths = served.get("/openapi.json").json()["paths"]
    assert {"/v1/recognize", "/v1/identities/{name}/photos", "/v1/status", "/v1/events"} <= set(paths)
    assert _error(served.get("/v1/nothing-here"), 404)
    assert "use POST" in _error(served.get("/v1/recognize"), 405)


@pytest.mark.parametrize("command", ["serve", "run"])
def test_binding_beyond_loopback_without_a_token_refuses_to_start(tmp_path, stills_gallery, command) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    extra = ["--source", str(REPO / "missing.mp4")] if command == "run" else []
    r = subprocess.run([*CLI, command, "--gallery", str(stills_gallery), *extra, "--http", f"0.0.0.0:{port}"],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert lines == [lines[-1]] and lines[0].startswith("facestream: error:"), r.stderr
    assert "0.0.0.0" in lines[0] and "token" in lines[0] and "Traceback" not in r.stderr


def test_a_port_in_use_is_a_one_line_error(tmp_path, stills_gallery) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = subprocess.run([*CLI, "serve", "--gallery", str(stills_gallery), "--http", f"127.0.0.1:{port}"],
                           cwd=REPO, capture_output=True, text=True, timeout=120,
                           env={**os.environ, "FACESTREAM_EMBEDDER__RUNTIME": "torch"})
    assert r.returncode == 2, r.stderr[-1000:]
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith(f"facestream: error: http.listen: cannot listen on 127.0.0.1:{port}"), r.stderr


@pytest.mark.parametrize(("http", "message"), [
    ({"listen": "0.0.0.0:8080"}, "http.listen: 0.0.0.0:8080 is not a loopback address; serving there needs"),
    ({"listen": "192.168.1.5:8080"}, "is not a loopback address"),
    ({"listen": "8080"}, "http.listen: must look like HOST:PORT"),
    ({"listen": "[::1"}, "http.listen: must look like HOST:PORT"),
    ({"listen": "127.0.0.1:99999"}, "http.listen: must look like HOST:PORT"),
    ({"listen": "0.0.0.0:8080", "token": "short"}, "http token must be at least 16 characters, got 5"),
    ({"token": "x" * 20, "token_file": "TOKENFILE"}, "set one, not both"),
    ({"token_file": "LOOSEFILE"}, "can be read by other users: chmod 600 it"),
    ({"token_file": "/nonexistent/token"}, "token file /nonexistent/token does not exist"),
])
def test_bad_http_settings_fail_in_one_line(tmp_path, http: dict, message: str) -> None:
    from daemon.config import ConfigError, load_settings, with_overrides

    private, loose = tmp_path / "token", tmp_path / "loose"
    for f, mode in ((private, 0o600), (loose, 0o644)):
        f.write_text("a-token-long-enough-for-the-api\n")
        f.chmod(mode)
    http = {k: {"TOKENFILE": str(private), "LOOSEFILE": str(loose)}.get(v, v) for k, v in http.items()}
    with pytest.raises(ConfigError) as exc:
        with_overrides(load_settings(), http=http)
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_a_token_from_a_private_file_allows_any_address(tmp_path) -> None:
    from daemon.config import load_settings, with_overrides

    token = tmp_path / "token"
    token.write_text("a-token-long-enough-for-the-api\n")
    token.chmod(0o600)
    s = with_overrides(load_settings(), http={"listen": "0.0.0.0:8080", "token_file": str(token)})
    assert s.http.secret() == "a-token-long-enough-for-the-api"


def test_bench_http_alternates_segments_with_and_without_the_pages_requests(data_dir) -> None:
    clip = data_dir / "face_recognition_examples/video/short_hamilton_clip.mp4"
    r = subprocess.run([*CLI, "bench", "http", "--source", str(clip), "--segments", "2", "--segment-seconds", "1",
                        "--warmup", "1", "--json"], cwd=REPO, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "FACESTREAM_EMBEDDER__RUNTIME": "torch"})
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert len(out["fps_without_page"]) == len(out["fps_with_page"]) == 2
    assert all(f > 0 for f in out["fps_without_page"] + out["fps_with_page"])  # speeds are benchmarks, not tests
    req = out["page_requests"]
    assert req["opened"] == 2 and req["snapshot"] >= 2 and req["status"] >= 2 and req["errors"] == 0
    assert abs(out["ratio_with_to_without"] - out["mean_with"] / out["mean_without"]) < 1e-3


def test_bench_http_on_a_file_that_is_no_video_fails_in_one_line() -> None:
    r = subprocess.run([*CLI, "bench", "http", "--source", str(REPO / "README.md"), "--warmup", "0.5"], cwd=REPO,
                       capture_output=True, text=True, timeout=120,
                       env={**os.environ, "FACESTREAM_EMBEDDER__RUNTIME": "torch"})
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("facestream: error: ") and "no frame was processed" in r.stderr
