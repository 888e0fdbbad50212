"""``bench match`` through the command line at small sizes: valid JSON with every figure, exact searches that
agree, a gallery read back whole from SQLite; bad sizes are one line and exit 2."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("faiss")

SEARCH_KEYS = {"build_s", "rss_added_mb", "index_mb", "ms_per_face_p50", "ms_per_face_mean", "ms_per_face_p99",
               "faces_timed"}


def test_bench_match_prints_every_figure_as_json(cli, tmp_path) -> None:
    rc, out, err = cli("bench", "match", "--identities", "300,2000", "--probes", "60", "--timed", "10",
                       "--ef-search", "8,64", "--nprobe", "4", "--pq-nprobe", "0,1", "--work-dir", tmp_path, "--json")
    assert rc == 0, err
    r = json.loads(out)
    assert [row["identities"] for row in r["sizes"]] == [300, 2000] and r["probes"] == 60
    for row in r["sizes"]:
        assert row["auto_index"] == "numpy" and row["gallery_open_s"] > 0 and row["gallery_file_mb"] > 0
        assert set(row) >= {"numpy", "faiss_flat", "faiss_hnsw_ef8", "faiss_hnsw_ef64", "faiss_ivf_nprobe4",
                            "faiss_ivfpq_nprobe1"}
        pq = next(row[k] for k in row if k.startswith("faiss_ivfpq_nprobe") and k != "faiss_ivfpq_nprobe1")
        assert pq["dims"] < 128 and pq["rerank"] == 512 and pq["recall_at_1"] >= 0.95
        for key in ("numpy", "faiss_flat", "faiss_hnsw_ef64", "faiss_ivf_nprobe4"):
            assert set(row[key]) >= SEARCH_KEYS and row[key]["faces_timed"] == 10, key
        assert row["faiss_flat"]["top2_equal_numpy"] == 1.0
        assert row["faiss_hnsw_ef64"]["recall_at_1"] >= 0.9 and 0 <= row["faiss_hnsw_ef8"]["recall_at_1"] <= 1
        assert row["top1_correct_exact"] > 0.5  # the synthetic probes are near their own identity
    assert list(tmp_path.iterdir()) == []  # the synthetic galleries are removed


@pytest.mark.parametrize("argv", [["--identities", "0"], ["--identities", "ten"], ["--identities", "1000,x"],
                                  ["--identities", "2.5"], ["--probes", "many"], ["--probes", "1"],
                                  ["--ef-search", "0"], ["--approx", "annoy"],
                                  ["--pq-nprobe", "-1"], ["--rerank", "0"]])
def test_bench_match_bad_input_is_one_line_exit_2(cli, argv) -> None:
    rc, out, err = cli("bench", "match", *argv)
    assert rc == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith("facestream: error: "), err
