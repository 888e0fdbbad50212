"""``analyze --chunk-s`` (issue 21, item 1): a long video (the shared clips concatenated with ffmpeg, 640x360 at
5 frames/s, a keyframe every second, 71.6 s, Miranda on screen four times) split into five chunks at keyframes
and analysed on a pool of two, against the same video analysed whole in one process: the same appearances of
Miranda and the same recognised tracks, no track reported twice, every event's track known. Also: the media
fragment a chunk is read as, the chunk plan, the stitching of a track across a boundary on real chunk parts,
and the one-line errors of bad chunk settings."""

from __future__ import annotations

import csv
import itertools
import json
import subprocess
from collections import Counter
from pathlib import Path

import pytest

FPS = 5
# Miranda's close-up is in each Hamilton clip (frames 82-210 of 275)
CLIPS = ["face_recognition_examples/video/short_hamilton_clip.mp4", "videos/talking_heads/video_retalking_1.mp4",
         "videos/known_identity/obama_speech.mp4", "face_recognition_examples/video/short_hamilton_clip.mp4",
         "videos/talking_heads/video_retalking_2.mp4", "videos/talking_heads/video_retalking_3.mp4",
         "face_recognition_examples/video/short_hamilton_clip.mp4", "videos/talking_heads/video_retalking_4.mp4",
         "videos/talking_heads/video_retalking_5.mp4", "face_recognition_examples/video/short_hamilton_clip.mp4"]
MIRANDA = "lin_manuel_miranda"


@pytest.fixture(scope="session")
def long_video(tmp_path_factory, data_dir: Path) -> Path:
    """The clips one after another, scaled and padded to 640x360, 5 frames/s, a keyframe every second."""
    path = tmp_path_factory.mktemp("long") / "long.mp4"
    inputs: list[str] = []
    filters = []
    for k, rel in enumerate(CLIPS):
        inputs += ["-i", str(data_dir / rel)]
        filters.append(f"[{k}:v]fps={FPS},scale=640:360:force_original_aspect_ratio=decrease,"
                       f"pad=640:360:(ow-iw)/2:(oh-ih)/2,setsar=1[v{k}]")
    graph = ";".join(filters) + ";" + "".join(f"[v{k}]" for k in range(len(CLIPS))) + \
        f"concat=n={len(CLIPS)}:v=1:a=0[out]"
    subprocess.run(["ffmpeg", "-loglevel", "error", *inputs, "-filter_complex", graph, "-map", "[out]",
                    "-c:v", "libx264", "-preset", "ultrafast", "-g", str(FPS), "-keyint_min", str(FPS),
                    "-sc_threshold", "0", str(path)], check=True, timeout=120)
    return path


def test_a_media_fragment_names_part_of_a_file(tmp_path, long_video) -> None:
    from pipeline.sources import parse_fragment, parse_source

    spec = parse_source(f"{long_video}#t=14,31")
    assert (spec.id, spec.uri, spec.kind, spec.start_s, spec.end_s) == ("long", str(long_video), "file", 14.0, 31.0)
    assert parse_source(f"file://{long_video}#t=57").start_s == 57.0
    assert parse_source(f"{long_video}#t=57").end_s is None
    assert parse_fragment(",2.5") == (0.0, 2.5) and parse_fragment("npt:1.5,2") == (1.5, 2.0)
    for bad in ("20,10", "a", "", "1,2,3", "5,5", "-1,2"):
        with pytest.raises(ValueError) as err:
            parse_source(f"{long_video}#t={bad}")
        assert str(err.value) == (f"bad media fragment '#t={bad}' on {long_video}: use #t=START,END or #t=START in "
                                  "seconds with 0 <= START < END")
    named = tmp_path / "clip#t=1,2.mp4"  # a file whose name has '#t=' in it is that file
    named.write_bytes(long_video.read_bytes())
    assert parse_source(str(named)).uri == str(named) and parse_source(str(named)).start_s is None
    with pytest.raises(ValueError, match="video file not found"):
        parse_source(str(tmp_path / "missing.mp4#t=1,2"))


def test_a_fragment_is_read_with_the_whole_files_numbers_and_times(long_video) -> None:
    import queue

    from pipeline.sources import VideoSource, parse_source
    from pipeline.types import Frame

    q: queue.Queue = queue.Queue()
    src = VideoSource(parse_source(f"{long_video}#t=14,16"), q)
    src.start()
    assert src.join(30)
    msgs = list(q.queue)
    frames = [m for m in msgs if isinstance(m, Frame)]
    assert [f.index for f in frames] == list(range(14 * FPS, 16 * FPS))
    assert frames[0].pts == pytest.approx(14.0) and frames[-1].pts == pytest.approx(16 - 1 / FPS)
    assert [m.status for m in msgs if not isinstance(m, Frame)] == ["opened", "eof"]


def test_the_chunk_plan_cuts_at_keyframes(long_video) -> None:
    from daemon.profiles.analyze_chunks import keyframe_times, plan_chunks

    keys = keyframe_times(long_video)
    assert keys[:3] == [0.0, 1.0, 2.0] and len(keys) == 72
    plan = plan_chunks(long_video, 71.6, 15, 2)
    print(f"chunks of {long_video.name} at --chunk-s 15: {plan}")
    assert len(plan) == 5 and plan[0][0] == 0.0 and plan[-1][1:] == (None, None)
    for (s0, end, own), (s1, _, _) in itertools.pairwise(plan):
        assert own == s1 and end == s1 + 2 and s1 in keys and 10 <= s1 - s0 <= 20
    assert plan_chunks(long_video, 71.6, 0, 2) == [(0.0, None, None)]  # 0: never split
    assert plan_chunks(long_video, 71.6, 50, 2) == [(0.0, None, None)]  # shorter than 1.5 chunks


@pytest.fixture(scope="module")
def whole_and_chunked(long_video, tmp_path_factory, stills_gallery, one_torch_thread) -> dict:
    """The video analysed whole in this process, and in chunks of 15 s on a pool of two."""
    from daemon.config import load_settings
    from daemon.profiles.analyze import run_analyze
    from daemon.profiles.analyze_driver import run_jobs

    settings = load_settings(None, embedder={"runtime": "torch"})
    whole = tmp_path_factory.mktemp("whole") / "a"
    chunked = tmp_path_factory.mktemp("chunked") / "a"
    r_whole = run_analyze(settings, stills_gallery, [long_video], whole)
    r_chunked = run_jobs(settings, stills_gallery, [long_video], chunked, workers=2, chunk_s=15, overlap_s=2)
    return {"whole": whole, "chunked": chunked, "r_whole": r_whole, "r_chunked": r_chunked}


def _events(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]


def _appearances(out: Path) -> dict[str, int]:
    return {r["identity"]: int(r["appearances"]) for r in csv.DictReader((out / "timeline.csv").open())}


def _recognised_tracks(events: list[dict]) -> list[tuple[str, float, float]]:
    return [(e["identity"], e["first_time"], e["last_time"]) for e in events
            if e["topic"] == "track.ended" and e["identity"] is not None]


def test_a_long_video_in_chunks_gives_the_whole_runs_appearances(whole_and_chunked) -> None:
    w, c = whole_and_chunked["whole"], whole_and_chunked["chunked"]
    rw, rc = whole_and_chunked["r_whole"], whole_and_chunked["r_chunked"]
    assert rc["exit_code"] == 0 == rw["exit_code"] and rc["jobs"] == 5 and rc["failed"] == []
    ew, ec = _events(w), _events(c)
    aw, ac = _appearances(w), _appearances(c)
    tw, tc = _recognised_tracks(ew), _recognised_tracks(ec)
    topics = {name: dict(sorted(Counter(e["topic"] for e in ev if e["topic"] != "stats").items()))
              for name, ev in (("whole", ew), ("chunked", ec))}
    print(f"\nappearances whole {aw} / chunked {ac}; recognised tracks whole {len(tw)} / chunked {len(tc)}; "
          f"index rows whole {rw['index_rows']} / chunked {rc['index_rows']}; events by topic {topics}")
    assert aw[MIRANDA] >= 4 and ac == aw, (aw, ac)  # at least once per Hamilton clip in the video
    assert tc == tw  # the same recognised tracks, from the same frame to the same frame
    all_w, all_c = (sorted((e["first_time"], e["last_time"], e["decision"]) for e in ev if e["topic"] == "track.ended")
                    for ev in (ew, ec))
    print(f"tracks whole {len(all_w)} / chunked {len(all_c)}; only whole: {sorted(set(all_w) - set(all_c))}; "
          f"only chunked: {sorted(set(all_c) - set(all_w))}")
    boundaries = [14.0, 29.0, 43.0, 57.0]  # the plan's (test_the_chunk_plan_cuts_at_keyframes)
    crossing = [t for t in all_c if any(t[0] < b < t[1] for b in boundaries)]
    print(f"tracks crossing a chunk boundary, stitched: {crossing}")
    assert crossing and set(crossing) <= set(all_w)  # stitched into the whole run's track, first to last frame
    ended = [e["track_id"] for e in ec if e["topic"] == "track.ended"]
    assert len(ended) == len(set(ended)) and ended  # no track reported twice
    firsts = {e["track_id"]: e["first_time"] for e in ec if e["topic"] == "track.ended"}
    assert sorted(firsts) == list(range(1, len(firsts) + 1))  # numbered in order of first appearance
    assert [firsts[t] for t in sorted(firsts)] == sorted(firsts.values())
    assert {e["track_id"] for e in ec if e["topic"] in ("face.recognized", "face.unknown")} <= set(ended)
    statuses = [e["status"] for e in ec if e["topic"] == "source.status"]
    assert statuses == ["opened", "eof"]
    assert rc["index_rows"] == len([e for e in ec if e["topic"] == "track.ended" and e["faces_judged"]])
    assert (c / "long.annotated.mp4").stat().st_size > 0
    from daemon.profiles.analyze import media_frames

    frames, _ = media_frames(c / "long.annotated.mp4")
    assert frames == media_frames(w / "long.annotated.mp4")[0]  # the chunks' videos cut and joined exactly


def test_bad_chunk_settings_are_one_line(cli, long_video, tmp_path) -> None:
    from cli_helpers import one_error_line

    for args, needle in ((["--chunk-s", "-1"], "--chunk-s must be 0 (never split) or more, got -1"),
                         (["--chunk-s", "10", "--chunk-overlap-s", "6"],
                          "--chunk-overlap-s 6 is more than half of --chunk-s 10")):
        rc, _, err = cli("analyze", long_video, "--out", tmp_path / "x", "--workers", "2", *args)
        assert rc == 2
        one_error_line(err, needle)
        assert not (tmp_path / "x").exists()


def test_a_boundary_joins_the_same_face_and_drops_what_the_next_chunk_has() -> None:
    """The rule on its own: a track alive at 14 s is joined to the next chunk's track on the same boxes (no
    embedding needed), a track starting in the overlap is dropped, a different face nearby is not joined."""
    from daemon.profiles.analyze_stitch import _Track, match_boundary

    a = {1: _Track(0, 1, 10.0, 15.8), 2: _Track(0, 2, 14.4, 15.8), 3: _Track(0, 3, 12.0, 14.6)}
    b = {1: _Track(1, 1, 14.2, 20.0), 2: _Track(1, 2, 14.4, 16.0), 3: _Track(1, 3, 14.2, 15.0)}
    frames = range(71, 80)
    boxes_a = {1: {f: (100.0, 100.0, 200.0, 200.0) for f in frames},
               2: {f: (400.0, 50.0, 480.0, 130.0) for f in frames},
               3: {f: (300.0, 200.0, 360.0, 260.0) for f in range(71, 73)}}
    boxes_b = {1: {f: (102.0, 101.0, 201.0, 203.0) for f in frames},
               2: {f: (400.0, 50.0, 480.0, 130.0) for f in frames},
               3: {f: (200.0, 200.0, 260.0, 260.0) for f in range(71, 75)}}
    pairs, dropped = match_boundary(a, b, 14.0, 16.0, 0.9, boxes_a, boxes_b)
    assert dropped == {2}  # started in chunk 0's overlap: chunk 1 has it from its start
    assert [(x.track_id, y.track_id) for x, y, _ in pairs] == [(1, 1)] and pairs[0][2] > 0.9
