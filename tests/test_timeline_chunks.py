"""The timeline written in row groups as rounds are simulated
(`fedsim.system.timeline_io`): the same rows as the timeline held whole, one
row group per chunk of rounds, reading back some rounds only, the system
stage's files, and a recorder that never holds more than a chunk."""

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

import fedsim.system.sim as sim
from fedsim.system import Payload, SystemConfig, load_result, save_result, simulate
from fedsim.system.round_plan import Recorder
from fedsim.system.timeline_io import TimelineWriter, read_timeline

MB = 1_000_000
SYSTEM = SystemConfig.model_validate({
    "clients": {"downlink": {"dist": "lognormal", "median": "20 Mbps", "sigma": 0.6},
                "uplink": {"dist": "lognormal", "median": "5 Mbps", "sigma": 0.6},
                "availability": 0.8, "dynamics": {"model": "lte"}},
    "server": {"downlink": "50 Mbps", "uplink": "10 Mbps"},
    "rounds": {"participation": 0.5, "dropout": 0.1},
})


def _run(**kw):
    return simulate(SYSTEM, client_samples=np.arange(10) * 50 + 100, payload=Payload(down_bytes=MB, up_bytes=MB),
                    work_fraction=0.4, rounds=5, seed=11, **kw)


def test_chunked_timeline_equals_the_whole_one(tmp_path, monkeypatch):
    monkeypatch.setattr(sim, "CHUNK_ROWS", 25)  # 10 clients: 2 rounds per row group
    whole = _run()
    chunked = _run(timeline_path=tmp_path / "timeline.parquet")
    assert chunked.timeline_frame is None and chunked.timeline_file == tmp_path / "timeline.parquet"
    pd.testing.assert_frame_equal(chunked.timeline, whole.timeline.reset_index(drop=True), check_dtype=False)
    pd.testing.assert_frame_equal(chunked.rounds, whole.rounds)
    for got, want in zip(chunked.participation, whole.participation, strict=True):
        np.testing.assert_array_equal(got, want)
    meta = pq.ParquetFile(tmp_path / "timeline.parquet").metadata
    assert meta.num_row_groups == 3 and meta.num_rows == 50  # rounds 1-2, 3-4, 5
    assert [meta.row_group(g).num_rows for g in range(3)] == [20, 20, 10]
    assert not list(tmp_path.glob(".*partial"))  # the partial file was renamed into place


def test_reading_only_some_rounds(tmp_path, monkeypatch):
    monkeypatch.setattr(sim, "CHUNK_ROWS", 25)
    chunked = _run(timeline_path=tmp_path / "t.parquet")
    some = chunked.read_timeline(rounds=[2, 5], columns=["round", "client_id", "upload_end_s"])
    assert list(some.columns) == ["round", "client_id", "upload_end_s"]
    assert some["round"].tolist() == [2] * 10 + [5] * 10
    whole = _run()
    want = whole.read_timeline(rounds=[2, 5], columns=["round", "client_id", "upload_end_s"])
    np.testing.assert_array_equal(some.to_numpy(), want.to_numpy())
    assert read_timeline(tmp_path / "t.parquet", rounds=[9]).empty


def test_the_stage_files_from_a_chunked_run(tmp_path):
    chunked = _run(timeline_path=tmp_path / "sim" / "timeline.parquet")
    save_result(chunked, tmp_path / "stage")  # copies the file
    back = load_result(tmp_path / "stage")
    pd.testing.assert_frame_equal(back.timeline, _run().timeline, check_dtype=False)
    save_result(chunked, tmp_path / "sim")  # already in place: left as it is
    assert (tmp_path / "sim" / "timeline.parquet").stat().st_size > 0


def test_the_recorder_holds_one_chunk_at_a_time():
    written = []

    class Sink:
        def write(self, table):
            written.append(table.to_pandas())

        def close(self):
            written.append("closed")

    record = Recorder(4, 7, Sink(), chunk_rounds=3)
    for r in range(1, 8):
        assert record.base(r) == ((r - 1) % 3) * 4
        assert all(values.size <= 12 for values in record.cols.values())
        record.cols["kept"][record.base(r) + 1] = True
        record.round_rows.append((r,))
        record.round_done(r)
    record.close()
    assert [len(f) for f in written[:-1]] == [12, 12, 4] and written[-1] == "closed"
    assert [f["round"].tolist()[0] for f in written[:-1]] == [1, 4, 7]
    assert all(f["kept"].sum() == len(f) // 4 for f in written[:-1])


def test_an_aborted_writer_leaves_nothing(tmp_path):
    writer = TimelineWriter(tmp_path / "t.parquet")
    writer.write(pd.DataFrame({"round": [1], "client_id": [0]}))
    writer.abort()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(RuntimeError, match="no timeline chunk"):
        TimelineWriter(tmp_path / "u.parquet").close()
