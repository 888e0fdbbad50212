"""Liveness at the door on real clips: phone replays of enrolled people are never granted, the live clip of the
same person is; the models load only where a door (or ?liveness=1) asks for them."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest

from daemon.config import load_settings
from daemon.profiles import build_daemon

REPLAY = "liveness/replay"
# attack_zubair opens with zubair himself in view beside the phone (frames 0-25, 1.7 s): that live face is the
# one granted. From 2 s on only the phone's face is in view, and nothing is named or granted (tested below).
KNOWN_ACCEPTED = ["attack_zubair"]
OWN_FACE_UNTIL_S = 1.7  # the last frame showing zubair's own face (MTCNN on every frame: frame 25 of 15 fps)
TD = ["attack_td_0001ffba3c--628befdf75a5cf63cd2c633b.mp4", "attack_td_0001fffbd2--630b66fab961b45a3ceb1ca9.mp4",
      "attack_td_0001fffbd2--630b6ba7e3a4854c648025ea.mp4", "attack_td_0001fffbd2--633bddecfc74d91be0d4f30f.MOV"]


@pytest.fixture(scope="module")
def replay_gallery(tmp_path_factory, data_dir: Path, detector, dlib_embedder) -> Path:
    """zubair and apfol enrolled from their live clips; the four people of the vendor replays, who have no live
    clip, from the replays themselves (the hardest case: the gallery holds exactly those faces)."""
    import cv2

    from pipeline.gallery import Gallery
    from pipeline.gallery.enrol import QualityGates, enrol
    from pipeline.gallery.stills import StillEmbedder

    path = tmp_path_factory.mktemp("replay") / "people.db"
    gallery = Gallery.create(path, dlib_embedder.model_id, dlib_embedder.dim)
    engine = StillEmbedder(detector, dlib_embedder, gallery.cache(), policy="dominant")
    clips = {"zubair": "live_zubair.webm", "apfol": "live_apfol.webm",
             **{f"td_{i}": name for i, name in enumerate(TD)}}
    for name, clip in clips.items():  # three frames of each clip, as stills (gallery add --video is slower)
        cap = cv2.VideoCapture(str(data_dir / REPLAY / clip))
        frames = []
        while (got := cap.read())[0]:  # webm has no reliable frame count to seek by
            frames.append(got[1])
        cap.release()
        items = []
        for f in (0.2, 0.5, 0.8):
            i = int(len(frames) * f)
            label = f"{clip}#frame={i}"
            items.append((Path(label), hashlib.sha256(label.encode()).hexdigest(),
                          cv2.cvtColor(frames[i], cv2.COLOR_BGR2RGB)))
        results = [r for r in engine.embed_images(items) if r.vec is not None]
        assert enrol(engine, gallery, name, [], QualityGates(), 0.01, results)["added"], name
    gallery.close()
    return path


def _door(tmp_path: Path, sources: list[Path], gallery: Path, name: str, **liveness) -> tuple[list[dict], list]:
    out, audit = tmp_path / f"{name}.jsonl", tmp_path / f"{name}.audit.jsonl"
    settings = load_settings(None, sources=[str(s) for s in sources], embedder={"runtime": "torch"},
                             sinks={"jsonl": str(out), "zmq": None}, door={"audit": str(audit)}, liveness=liveness)
    daemon, _parts = build_daemon(settings, gallery)
    assert daemon.run(install_signals=False) == 0
    events = [json.loads(line) for line in out.read_text().splitlines()]
    return events, [json.loads(line) for line in audit.read_text().splitlines()]


def test_replays_are_never_granted_and_the_live_clips_are(tmp_path, data_dir, replay_gallery) -> None:
    attacks = [data_dir / REPLAY / c for c in ("attack_zubair.webm", "attack_apfol.webm", *TD)]
    events, audit = _door(tmp_path, attacks, replay_gallery, "attacks")
    granted = [e for e in events if e["topic"] == "access.granted"]
    named = {e["source"] for e in events if e["topic"] == "face.recognized"}
    attacks_denied = [a for a in audit if a.get("reason") == "presentation attack"]
    print(f"replays: {len(named)} of {len(attacks)} named by the gallery, {len(attacks_denied)} tracks denied as "
          f"presentation attacks (live scores {[a['live_score'] for a in attacks_denied]}), "
          f"{len(granted)} granted: {[(g['source'], g['live_score']) for g in granted]}")
    assert attacks_denied and all(a["live_score"] < 0.5 for a in attacks_denied)
    _recognized_carry_the_live_score(events, audit)
    # Issue 22's item "no replay granted" is not met on attack_zubair, because the clip shows the enrolled
    # person's own live face first. Any other replay granted, or zubair's no longer granted, fails this line.
    assert sorted(g["source"] for g in granted) == KNOWN_ACCEPTED, granted
    own = [e for e in events if e["topic"] == "face.recognized" and e["source"] == "attack_zubair"
           and e["track_id"] == granted[0]["track_id"]]
    print(f"attack_zubair: the granted track was named at {own[0]['pts']} s, box {own[0]['bbox']}")
    assert own[0]["pts"] < OWN_FACE_UNTIL_S and own[0]["bbox"][2] < 600  # his face, left of the phone (x >= 700)
    events, _ = _door(tmp_path, [Path(f"{data_dir / REPLAY / 'attack_zubair.webm'}#t=2,11")], replay_gallery,
                      "phone_only")
    print(f"attack_zubair from 2 s (the phone alone): {[e['topic'] for e in events if 'face' in e['topic']]}")
    assert not [e for e in events if e["topic"] in ("access.granted", "face.recognized")]

    lives = [data_dir / REPLAY / c for c in ("live_zubair.webm", "live_apfol.webm")]
    events, audit = _door(tmp_path, lives, replay_gallery, "lives")
    granted = {e["identity"]: e["live_score"] for e in events if e["topic"] == "access.granted"}
    print(f"live clips granted: {granted}")
    assert set(granted) == {"zubair", "apfol"} and all(s >= 0.5 for s in granted.values())
    _recognized_carry_the_live_score(events, audit)


def test_without_a_door_events_carry_no_live_score(hamilton_run) -> None:
    events, _ = hamilton_run  # the shared run: no door, so nothing was scored
    named = [e for e in events if e["topic"] in ("face.recognized", "face.unknown")]
    assert named and not any("live_score" in e for e in named)


def _recognized_carry_the_live_score(events: list[dict], audit: list[dict]) -> None:
    """Scored before the frame's events go out: each face.recognized has the track's mean so far, over no
    more faces than the door decided on (the door stops scoring a track it has decided)."""
    named = [e for e in events if e["topic"] == "face.recognized"]
    assert named and all(0.0 <= e["live_score"] <= 1.0 and e["live_faces"] >= 1 for e in named), named
    decided = {(a["source"], a["track_id"]): a for a in audit if a.get("live_score") is not None}
    for e in named:
        if (a := decided.get((e["source"], e["track_id"]))) is not None:
            assert e["live_faces"] <= len(a["votes"])


def test_the_settings_default_is_the_published_operating_point() -> None:
    from daemon.config.liveness import PUBLISHED_THRESHOLD as settings_default
    from pipeline.liveness import PUBLISHED_THRESHOLD

    assert settings_default == PUBLISHED_THRESHOLD == load_settings(None).liveness.threshold


def test_without_a_door_no_liveness_model_is_loaded(tmp_path, data_dir, stills_gallery) -> None:
    video = data_dir / "face_recognition_examples" / "video" / "short_hamilton_clip.mp4"
    sys.modules.pop("models.minifasnet", None)
    settings = load_settings(None, sources=[str(video)], embedder={"runtime": "torch"},
                             sinks={"jsonl": str(tmp_path / "e.jsonl"), "zmq": None})
    _daemon, parts = build_daemon(settings, stills_gallery)
    assert parts.door is None and "models.minifasnet" not in sys.modules


def test_missing_weights_fail_the_door_in_one_line_before_any_file(tmp_path, cli, monkeypatch, data_dir,
                                                                  stills_gallery) -> None:
    video = data_dir / "face_recognition_examples" / "video" / "short_hamilton_clip.mp4"
    empty = tmp_path / "no-weights"
    empty.mkdir()
    monkeypatch.setenv("FACESTREAM_LIVENESS__WEIGHTS_DIR", str(empty))
    cfg = tmp_path / "door.toml"
    cfg.write_text(f'[door]\naudit = "{tmp_path / "audit.jsonl"}"\n')
    code, _, err = cli("run", "--config", cfg, "--source", video, "--gallery", stills_gallery, "--zmq", "",
                       "--events-jsonl", tmp_path / "e.jsonl")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "minifasnet" in err and "not found" in err and "SHA-256" in err
    assert not (tmp_path / "e.jsonl").exists() and not (tmp_path / "audit.jsonl").exists()


def test_the_door_scores_a_track_until_it_decides_it_and_denies_a_print(tmp_path, data_dir, detector) -> None:
    """Upstream's T1 (live) and F1 (a print) as frames of two tracks that the vote names: T1 is granted after
    min_frames faces, F1 refused as a presentation attack; faces after the decision are not scored, and the
    face events carry the score so far."""
    import numpy as np

    from daemon.profiles.door import DoorController
    from daemon.profiles.door_liveness import make_liveness
    from pipeline.images import load_rgb
    from pipeline.types import Frame, MatchedFrame, TrackDecision, TrackedFrame

    settings = load_settings(None)  # liveness weights: the shared copy (conftest)
    liveness = make_liveness(settings)
    published: list[tuple[str, dict]] = []
    door = DoorController(tmp_path / "audit.jsonl", lambda: (0.9, 0.05), votes_k=3, votes_n=5,
                          publish=lambda t, b: published.append((t, b)), liveness=liveness)
    samples = data_dir / "liveness" / "models" / "samples"
    people = {1: load_rgb(samples / "image_T1.jpg"), 2: load_rgb(samples / "image_F1.jpg")}
    dets = {tid: detector.detect([img])[0][0] for tid, img in people.items()}
    for i in range(5):  # five judged faces each; the door decides on the third
        for tid, img in people.items():
            d = TrackDecision(tid, dets[tid], "ada", 0.95, 0.1, "ada", i == 0, False, i + 1, "ada",
                              (("ada", 0.95), ("bob", 0.6)))
            msg = MatchedFrame(TrackedFrame(Frame("door", i, float(i), 0.0, img, False), (), (), ()), (d,), ())
            liveness.annotate(msg)  # as the events stage does, before the frame's events
            if i == 0:
                assert liveness.fields("door", tid)["live_faces"] == 1
            door.observe(msg, {})
    door.close()
    assert liveness.faces_scored == 6  # 3 faces a track, none after the door's decision
    topics = {b["track_id"]: (t, b) for t, b in published}
    assert topics[1][0] == "access.granted" and topics[1][1]["live_score"] >= 0.5
    assert topics[2][0] == "access.denied" and topics[2][1]["reason"] == "presentation attack"
    assert topics[2][1]["live_score"] < 0.5
    audit = {a["track_id"]: a for a in map(json.loads, (tmp_path / "audit.jsonl").read_text().splitlines())}
    assert audit[2]["decision"] == "denied" and audit[2]["claimed"] == "ada" and audit[2]["live_score"] < 0.5
    assert np.isclose(audit[1]["live_score"], liveness.fields("door", 1)["live_score"])
