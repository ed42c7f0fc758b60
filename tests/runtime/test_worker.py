"""LatestFrameWorker: newest frame wins, stale ones are dropped and counted, clean stop."""
import threading
import time

from hkmr_ros.worker import LatestFrameWorker


def test_drops_stale_frames_under_a_slow_callable():
    def slow(x):
        time.sleep(0.05)
        return x * 10
    results = []
    w = LatestFrameWorker(slow, on_result=lambda item, r: results.append((item, r)))
    for i in range(40):           # a 200 Hz camera against a 20 Hz estimator
        w.submit(i)
        time.sleep(0.005)
    assert w.wait_idle(5.0)
    assert w.submitted == 40
    assert w.processed + w.dropped == 40
    assert w.dropped >= 25        # most frames never waited for the slow stage
    items = [i for i, _ in results]
    assert items == sorted(items) and items[-1] == 39   # order kept, the newest processed
    assert all(r == i * 10 for i, r in results)
    assert w.stop()


def test_latency_bounded_by_one_processing_time():
    lat = []
    def fn(t_submit):
        lat.append(time.monotonic() - t_submit)
        time.sleep(0.03)
    w = LatestFrameWorker(fn)
    for _ in range(60):
        w.submit(time.monotonic())
        time.sleep(0.004)
    w.wait_idle(5.0)
    w.stop()
    # a queue would reach ~60 * 0.026 s; the newest-wins slot keeps it under one run + slack
    assert max(lat) < 0.15


def test_runs_off_the_caller_thread_and_survives_errors():
    threads = []
    errors = []
    def fn(x):
        threads.append(threading.get_ident())
        if x == 1:
            raise RuntimeError("bad frame")
        return x
    w = LatestFrameWorker(fn, on_error=lambda item, e: errors.append((item, str(e))))
    for x in range(3):
        w.submit(x)
        w.wait_idle(2.0)
    assert threading.get_ident() not in threads
    assert errors == [(1, "bad frame")] and w.errors == 1 and w.processed == 3
    assert w.last_result == 2
    w.stop()


def test_stop_finishes_current_and_refuses_new():
    started = threading.Event()
    release = threading.Event()
    done = []
    def fn(x):
        started.set()
        release.wait(2.0)
        done.append(x)
    w = LatestFrameWorker(fn)
    w.submit("a")
    assert started.wait(2.0)
    w.submit("b")                  # pending while "a" runs
    threading.Timer(0.05, release.set).start()
    assert w.stop(drain=False, timeout=3.0)
    assert done == ["a"] and w.dropped == 1
    assert not w.running and w.submit("c") is False


def test_stop_with_drain_processes_pending():
    done = []
    w = LatestFrameWorker(lambda x: (time.sleep(0.02), done.append(x)))
    w.submit(1)
    w.submit(2)
    assert w.stop(drain=True, timeout=3.0)
    assert done[-1] == 2


def test_pipeline_behind_the_worker_drops_stale_frames_under_a_slow_estimator():
    """A 100 Hz camera into the pipeline with a 20 Hz estimator: stale frames are dropped
    (counted), results come in stamp order, and each result's frame is recent."""
    from hkmr_ros.people import Detection
    from hkmr_ros.pipeline import Pipeline, PipelineConfig

    from pipeline_fakes import FakeEstimator, draw_people, gt_box

    img = draw_people([((320, 240), 260, 0)])
    pipe = Pipeline(FakeEstimator(delay_s=0.05), PipelineConfig(detector="none"))
    box = [Detection(gt_box((320, 240), 260), 0.9)]
    done = []

    def work(item):
        stamp_ns, t_submit = item
        result = pipe.process(img, stamp_ns, "cam", detections=box if stamp_ns == 0 else None)
        return result, t_submit

    w = LatestFrameWorker(work, on_result=lambda item, r: done.append((r[0].stamp_ns, time.monotonic() - r[1])))
    for k in range(60):
        w.submit((k * 10_000_000, time.monotonic()))
        time.sleep(0.01)
    assert w.wait_idle(5.0) and w.stop()
    assert w.dropped > 30 and w.processed + w.dropped == 60
    stamps = [s for s, _ in done]
    assert stamps == sorted(stamps) and stamps[-1] == 59 * 10_000_000
    assert max(lat for _, lat in done) < 0.5            # one slow call plus the wait for it, not a queue
    assert pipe.stats["frames"] == w.processed and len(pipe.tracker.tracks) == 1


def test_pipeline_reset_from_another_thread_waits_for_the_frame():
    """A reset (e.g. from a ROS callback) during a slow frame neither crashes nor corrupts it."""
    from hkmr_ros.people import Detection
    from hkmr_ros.pipeline import Pipeline, PipelineConfig

    from pipeline_fakes import FakeEstimator, draw_people, gt_box

    img = draw_people([((320, 240), 260, 0)])
    pipe = Pipeline(FakeEstimator(delay_s=0.1), PipelineConfig(detector="none"))
    box = [Detection(gt_box((320, 240), 260), 0.9)]
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("r", pipe.process(img, 0, "cam", detections=box)))
    t.start()
    time.sleep(0.03)                      # the frame is inside the slow estimator now
    ended = pipe.reset()
    t.join(2.0)
    assert [p.track_id for p in out["r"].people] == [1]
    assert ended == [1] and pipe.tracker.tracks == []
