"""Unknown visitors and 1:1 verification through a real daemon: two talking-head clips looped as two cameras
(in process, the HTTP API on 127.0.0.1), the stills gallery; then photos verified against each other and
against an enrolled person."""

from __future__ import annotations

import json
import shutil
import sqlite3
import threading
import time
from pathlib import Path

import pytest
import requests
from daemon_helpers import free_port

HEADS = "videos/talking_heads/video_retalking_{}.mp4"
OBAMA, KIT = "stills/obama2.jpg", "knn_examples/train/kit_harington/john2.jpeg"
CAMS = ("video_retalking_1", "video_retalking_2")


class Looped:
    """``facestream run`` as its command wires it (profiles, unknown visitors, HTTP), on two looped clips."""

    def __init__(self, tmp: Path, data_dir: Path, gallery: Path) -> None:
        from daemon.config import load_settings
        from daemon.http.wiring import attach_http
        from daemon.profiles import build_daemon
        from daemon.profiles.unknowns import attach_unknowns

        self.gallery, self.events = gallery, tmp / "events.jsonl"
        self.base = f"http://127.0.0.1:{free_port()}"
        # A loop's first frame differs from its last by 2.5-2.8 grey levels, consecutive frames by at most 1.1:
        # at 1.8 each loop is a new shot, so a new track, a new appearance.
        settings = load_settings(None, sources=[str(data_dir / HEADS.format(i)) for i in (1, 2)],
                                 embedder={"runtime": "torch"}, pipeline={"scene_cut_threshold": 1.8},
                                 sinks={"jsonl": str(self.events), "zmq": None},
                                 http={"listen": self.base.removeprefix("http://")})
        self.daemon, _ = build_daemon(settings, gallery, {"loop": True})  # files, looped, never dropped from
        attach_http(self.daemon, attach_unknowns(self.daemon))
        self.store = gallery.with_name(gallery.name + ".unknowns.db")
        self.thread = threading.Thread(target=self.daemon.run, kwargs={"install_signals": False}, daemon=True)
        self.thread.start()

    def request(self, method: str, path: str, **kw) -> requests.Response:
        return requests.request(method, self.base + path, headers={"X-Facestream-Request": "1"}, timeout=60, **kw)

    def read_events(self) -> list[dict]:
        return [json.loads(line) for line in self.events.read_text().splitlines() if line.strip()]

    def wait(self, pred, timeout_s: float, what: str):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with_value = pred()
            if with_value:
                return with_value
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}")

    def visitors(self) -> dict[str, dict]:
        """By camera (each clip shows one person)."""
        return {v["cameras"][0]: v for v in self.request("GET", "/v1/unknowns").json()["visitors"]}

    def stop(self) -> None:
        self.daemon.request_stop()
        self.thread.join(30)


@pytest.fixture(scope="module")
def looped(tmp_path_factory, data_dir, stills_gallery, one_torch_thread):
    tmp = tmp_path_factory.mktemp("unknowns")
    shutil.copy(stills_gallery, tmp / "gallery.db")
    run = Looped(tmp, data_dir, tmp / "gallery.db")
    try:
        run.wait(lambda: run.thread.is_alive() and requests.get(run.base + "/v1/status", timeout=2).ok, 60, "the API")
        yield run
    finally:
        run.stop()
    assert not run.thread.is_alive()


def _error(r: requests.Response, status: int) -> str:
    assert r.status_code == status, r.text
    message = r.json()["error"]["message"]
    assert message and "\n" not in message
    return message


def test_two_cameras_give_two_visitors_with_their_counts(looped) -> None:
    seen = looped.wait(lambda: (v := looped.visitors()) and set(v) == set(CAMS) and
                       all(x["count"] >= 2 for x in v.values()) and v, 60, "two visitors seen twice")
    assert len(looped.request("GET", "/v1/unknowns").json()["visitors"]) == 2  # each person one visitor
    ids = {cam: v["id"] for cam, v in seen.items()}
    unknown = [e for e in looped.read_events() if e["topic"] == "face.unknown"]
    assert unknown and all(e["visitor"] == ids[e["source"]] for e in unknown)
    for cam in CAMS:  # the first time a stranger, then one who came back
        seen_count = [e["visitor_appearances"] for e in unknown if e["source"] == cam]
        assert seen_count[:2] == [1, 2], seen_count
    ended = [e for e in looped.read_events() if e["topic"] == "track.ended" and e["decision"] == "unknown"]
    for cam, v in seen.items():  # every ended appearance counted (a running one may be counted already)
        assert v["count"] >= sum(e["source"] == cam for e in ended)
        assert v["first_seen"] <= v["last_seen"] and 1 <= len(v["faces"]) <= 5
    one = looped.request("GET", f"/v1/unknowns/{ids[CAMS[0]]}").json()
    face = looped.request("GET", one["faces"][0])
    assert face.status_code == 200 and face.headers["content-type"] == "image/jpeg"
    assert face.content[:2] == b"\xff\xd8" and len(face.content) > 5000
    assert looped.store.stat().st_mode & 0o777 == 0o600


def test_bad_enrolments_are_json_errors_and_change_nothing(looped) -> None:
    v = looped.visitors()
    assert set(v) == set(CAMS)
    before = requests.get(looped.base + "/v1/identities").json()["identities"]
    vid = v[CAMS[0]]["id"]
    assert "already exists" in _error(looped.request("POST", f"/v1/unknowns/{vid}/enrol",
                                                     json={"name": "barack_obama"}), 409)
    assert "too like" in _error(looped.request("POST", f"/v1/unknowns/{vid}/enrol", json={"name": "Joe_Biden"}), 409)
    _error(looped.request("POST", f"/v1/unknowns/{vid}/enrol", json={"name": "../etc"}), 422)
    _error(looped.request("POST", f"/v1/unknowns/{vid}/enrol", json={"nom": "x"}), 422)
    for stale in ("0123abcd", "nope"):
        _error(looped.request("POST", f"/v1/unknowns/{stale}/enrol", json={"name": "person_a"}), 404)
        _error(looped.request("GET", f"/v1/unknowns/{stale}"), 404)
        _error(looped.request("DELETE", f"/v1/unknowns/{stale}"), 404)
    _error(looped.request("GET", f"/v1/unknowns/{vid}/faces/999999.jpg"), 404)
    assert requests.get(looped.base + "/v1/identities").json()["identities"] == before
    assert {c: x["id"] for c, x in looped.visitors().items()} == {c: x["id"] for c, x in v.items()}
    audit = [json.loads(line) for line in
             looped.gallery.with_name("gallery.db.api-audit.jsonl").read_text().splitlines()]
    assert [a["status"] for a in audit if a["action"] == "enrol_visitor"][:3] == [409, 409, 422]


def test_enrolled_visitor_is_named_on_the_next_loop_and_the_other_stays_unknown(looped) -> None:
    a, b = (looped.visitors()[c] for c in CAMS)
    looped.enrolled_faces = [looped.request("GET", url).content for url in a["faces"]]
    r = looped.request("POST", f"/v1/unknowns/{a['id']}/enrol", json={"name": "person_a"})
    assert r.status_code == 200, r.text
    assert r.json()["identity"] == "person_a" and r.json()["added"] >= 1 and r.json()["visitor"] == a["id"]
    _error(looped.request("GET", f"/v1/unknowns/{a['id']}"), 404)  # the visitor is gone once enrolled
    start = len(looped.read_events())
    after = lambda: looped.read_events()[start:]  # noqa: E731

    named = looped.wait(lambda: [e for e in after() if e["topic"] == "face.recognized"
                                 and e["source"] == CAMS[0]], 30, "person_a named on camera 1")
    assert named[0]["identity"] == "person_a" and "visitor" not in named[0]
    # From here on every track of camera 1 is judged on the new gallery: none adds an appearance. Camera 2's
    # next whole loop (a track reported unknown after this point, then ended): the same visitor, never named.
    cam1 = {c: v["count"] for c, v in looped.visitors().items() if c == CAMS[0]}
    mark = len(looped.read_events())

    def next_loop_of_camera_2() -> bool:
        events = looped.read_events()[mark:]
        unknown = {e["track_id"] for e in events if e["topic"] == "face.unknown" and e["source"] == CAMS[1]}
        return any(e["topic"] == "track.ended" and e["source"] == CAMS[1] and e["track_id"] in unknown
                   for e in events)

    looped.wait(next_loop_of_camera_2, 30, "camera 2's next loop")
    events = after()
    assert not [e for e in events if e["topic"] == "face.recognized" and e["source"] == CAMS[1]]
    assert {e["visitor"] for e in events if e["topic"] == "face.unknown" and e["source"] == CAMS[1]} == {b["id"]}
    now = looped.visitors()
    assert now[CAMS[1]]["id"] == b["id"] and now[CAMS[1]]["count"] > b["count"]
    assert {c: v["count"] for c, v in now.items() if c == CAMS[0]} == cam1


def test_not_this_person_on_a_recent_event_and_its_bad_input(looped) -> None:
    recent = looped.request("GET", "/v1/events/recent", params={"limit": 10000}).json()["events"]
    named = [e for e in recent if e["topic"] == "face.recognized" and e["identity"] == "person_a"]
    unknown = next(e for e in recent if e["topic"] == "face.unknown")
    ended = next(e for e in recent if e["topic"] == "track.ended")
    before = requests.get(looped.base + "/v1/status").json()["gallery"]
    for e in (unknown, ended):  # named nobody: 422, nothing changed
        assert "named nobody" in _error(looped.request("POST", f"/v1/events/{e['seq']}/reject"), 422)
    for stale in (0, 10**9):
        assert "no recent event" in _error(looped.request("POST", f"/v1/events/{stale}/reject"), 404)
    assert requests.get(looped.base + "/v1/status").json()["gallery"] == before
    r = looped.request("POST", f"/v1/events/{named[-1]['seq']}/reject")  # no body, as the page sends it
    assert r.status_code == 200, r.text
    got = r.json()
    # She is person_a: her own face scores like her templates, so her threshold rises only to its bound.
    assert got["identity"] == "person_a" and got["negatives"] == 1 and got["gallery_version"] > before["version"]
    assert got["gallery_threshold"] <= got["threshold"] <= max(got["bound"], got["gallery_threshold"])
    assert got["threshold"] == min(got["bound"], max(got["gallery_threshold"], got["score"] + 0.01)) or got["bounded"]
    assert requests.get(looped.base + "/v1/status").json()["gallery"]["version"] == got["gallery_version"]
    audit = [json.loads(line) for line in
             looped.gallery.with_name("gallery.db.api-audit.jsonl").read_text().splitlines()]
    assert [a["status"] for a in audit if a["action"] == "reject"] == [422, 422, 404, 404, 200]


def test_merge_and_split_through_the_api_round_trip(looped) -> None:
    def people() -> dict[str, list[str]]:
        return {p["name"]: p["photos"] for p in requests.get(looped.base + "/v1/identities").json()["identities"]}

    before, status = people(), requests.get(looped.base + "/v1/status").json()["gallery"]
    assert "into itself" in _error(looped.request("POST", "/v1/identities/joe_biden/merge",
                                                  json={"other": "joe_biden"}), 422)
    _error(looped.request("POST", "/v1/identities/joe_biden/merge", json={"other": "nobody"}), 404)
    _error(looped.request("POST", "/v1/identities/nobody/split", json={"templates": [1], "name": "x_y"}), 404)
    assert people() == before
    r = looped.request("POST", "/v1/identities/barack_obama/merge", json={"other": "joe_biden"})
    assert r.status_code == 200, r.text
    merged = people()
    assert "joe_biden" not in merged and merged["barack_obama"] == before["barack_obama"] + before["joe_biden"]
    _error(looped.request("POST", "/v1/identities/barack_obama/split",
                          json={"templates": [2], "name": "alex_lacamoire"}), 409)
    _error(looped.request("POST", "/v1/identities/barack_obama/split", json={"templates": [1, 2], "name": "x_y"}), 422)
    r = looped.request("POST", "/v1/identities/barack_obama/split", json={"templates": [2], "name": "joe_biden"})
    assert r.status_code == 200, r.text
    assert people() == before
    now = requests.get(looped.base + "/v1/status").json()["gallery"]
    assert (now["threshold"], now["margin"]) == (status["threshold"], status["margin"])


def test_erasing_a_visitor_leaves_no_face_bytes_in_any_file(looped) -> None:
    looped.daemon.sources[1].stop()  # camera 2 stops: no new appearance of her can come (camera 1 runs on)
    looped.wait(lambda: not looped.daemon.sources[1].is_alive(), 20, "camera 2 stopped")
    time.sleep(0.5)  # its last frames pass the stages
    v = looped.visitors()[CAMS[1]]
    faces = [looped.request("GET", url).content for url in v["faces"]]
    with sqlite3.connect(looped.store) as conn:
        vecs = [row[0] for row in conn.execute("SELECT vec FROM appearances WHERE visitor = ?", (v["id"],))]
    assert faces and vecs
    r = looped.request("DELETE", f"/v1/unknowns/{v['id']}")
    assert r.status_code == 200 and r.json()["appearances"] == v["count"], r.text
    _error(looped.request("DELETE", f"/v1/unknowns/{v['id']}"), 404)
    files = [p for p in looped.store.parent.iterdir() if p.is_file()]
    assert looped.store in files
    for p in files:
        raw = p.read_bytes()
        for face in faces + looped.enrolled_faces:  # hers, and those of the visitor enrolled as person_a
            assert face[200:264] not in raw, p.name
        for vec in vecs:
            assert vec[:64] not in raw, p.name
    assert CAMS[1] not in looped.visitors()
    # Erasing a person erases the visitors their faces were kept as (a track judged before the enrolment's swap).
    before = [v["id"] for v in looped.request("GET", "/v1/unknowns").json()["visitors"]]
    gone = looped.request("DELETE", "/v1/identities/person_a")
    assert gone.status_code == 200 and gone.json()["visitors_erased"] == len(before), gone.text
    assert not {v["id"] for v in looped.request("GET", "/v1/unknowns").json()["visitors"]} & set(before)


def _photo(data_dir: Path, name: str) -> tuple[str, bytes]:
    return Path(name).name, (data_dir / "face_recognition_examples" / name).read_bytes()


def test_verify_two_photos_or_a_photo_and_a_person(looped, data_dir) -> None:
    def verify(*names: str, identity: str | None = None) -> requests.Response:
        return looped.request("POST", "/v1/verify", params={"identity": identity} if identity else None,
                              files=[("photo", _photo(data_dir, n)) for n in names])

    assert "no identity named 'nobody'" in _error(verify(OBAMA, identity="nobody"), 404)
    assert "two photos" in _error(verify(OBAMA), 422)
    cat = ("cat.jpg", (data_dir / "images_misc/no_faces/cat.jpg").read_bytes())
    assert "photo 1: no face" in _error(looped.request("POST", "/v1/verify", files=[
        ("photo", cat), ("photo", _photo(data_dir, OBAMA))]), 422)
    same = verify("stills/obama-480p.jpg", OBAMA).json()
    other = verify(OBAMA, KIT).json()  # Kit Harington, enrolled nowhere
    assert same["decision"] == "same" and same["score"] >= same["threshold"]
    assert other["decision"] == "different" and other["score"] < other["threshold"] == same["threshold"]
    assert same["threshold"] == requests.get(looped.base + "/v1/status").json()["gallery"]["threshold"]
    match = verify(OBAMA, identity="barack_obama").json()
    assert match["decision"] == "match" and match["identity"] == "barack_obama"
    assert match["score"] >= match["threshold"]
    assert verify(KIT, identity="barack_obama").json()["decision"] == "no match"
