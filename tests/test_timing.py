"""The stages' stopwatch (retrieval/timing.py): durations only, from the process's start when asked."""
import subprocess
import sys
import time

import pytest

from retrieval.timing import Clock, process_age


def test_stamp_adds_wall_seconds_and_images_per_second():
    clock = Clock()
    time.sleep(0.05)
    out = clock.stamp({"map": 0.5}, images=10)
    assert out["map"] == 0.5 and set(out["wall"]) == {"seconds", "images", "img_per_s"}
    assert 0.05 <= out["wall"]["seconds"] < 5
    assert out["wall"]["images"] == 10
    assert out["wall"]["img_per_s"] == round(10 / out["wall"]["seconds"], 2)
    assert set(clock.stamp({})["wall"]) == {"seconds"}  # no images: no rate
    assert clock.stamp({}, images=0)["wall"]["img_per_s"] == 0


def test_stamp_leaves_the_metrics_unchanged_and_writes_no_timestamp():
    metrics = {"a": 1}
    out = Clock().stamp(metrics)
    assert metrics == {"a": 1} and out["wall"]["seconds"] < 60  # a duration, not a clock reading


def test_whole_process_counts_from_the_process_start():
    # a fresh interpreter sleeps before it makes its clock: the clock counts that time too
    code = ("import time; time.sleep(0.4); from retrieval.timing import Clock; "
            "print(Clock(True).seconds(), Clock(False).seconds())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    whole, own = map(float, out.stdout.split())
    if sys.platform.startswith("linux"):
        assert 0.4 <= whole < 30 and own < 0.1
    assert 0 <= process_age() < 30 * 86400


def test_process_age_is_zero_where_proc_cannot_be_read(monkeypatch):
    import retrieval.timing as timing

    def no_proc(*args, **kwargs):
        raise OSError("no /proc here")
    monkeypatch.setattr(timing, "open", no_proc, raising=False)
    assert process_age() == 0.0
    assert Clock(True).seconds() < 1  # falls back to counting from the clock's making


def test_a_zero_duration_is_written_as_a_millisecond(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(clock, "seconds", lambda: 0.0)
    assert clock.stamp({}, images=5)["wall"] == {"seconds": 0.001, "images": 5, "img_per_s": 5000.0}
