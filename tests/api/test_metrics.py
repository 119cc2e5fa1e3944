"""`/metrics`: the whole queue's numbers in Prometheus text, workers' outcomes included."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Api, Servers, Workers, wait_for
from tests.worker.test_reliability import FAST, finished, post


def scrape(api: Api) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = api.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def test_counters_histogram_and_gauges(api: Api, workers: Workers, clean: Servers) -> None:
    empty = scrape(api)
    assert empty[("taskq_workers_alive", ())] == 0
    assert empty[("taskq_oldest_pending_age_seconds", ())] == 0
    assert empty[("taskq_queue_depth", (("priority", "3"),))] == 0

    waiting = post(api, {"task_type": "FibonacciTask", "input_data": {"n": 3}, "priority": 4})
    clean.sql("UPDATE tasks SET run_at = now() - interval '100 seconds'")
    before = scrape(api)
    assert before[("taskq_queue_depth", (("priority", "4"),))] == 1
    assert before[("taskq_oldest_pending_age_seconds", ())] >= 100
    created = ("taskq_tasks_created_total", (("priority", "4"), ("task_type", "FibonacciTask")))
    assert before[created] == 1

    workers.start(**FAST)
    failing = post(api, {"task_type": "FailTask", "input_data": {}, "max_attempts": 2})
    finished(api, waiting["id"])
    finished(api, failing["id"])
    assert api.client.post(f"/tasks/{failing['id']}/retry").status_code == 200
    finished(api, failing["id"])
    # The workers count an outcome just after committing it: wait for the last one to land.
    durations = ("taskq_task_duration_seconds_count", (("task_type", "FailTask"),))
    after = wait_for(lambda: (m := scrape(api)).get(durations) == 4 and m, what="the counts")
    fib = (("priority", "4"), ("task_type", "FibonacciTask"))
    fail = (("priority", "3"), ("task_type", "FailTask"))
    assert after[("taskq_tasks_completed_total", fib)] == 1
    assert after[("taskq_tasks_failed_total", fail)] == 2  # once, then again after the retry
    assert after[("taskq_tasks_retried_total", fail)] == 3  # two automatic, one by hand
    assert after[("taskq_tasks_created_total", fail)] == 1
    assert after[("taskq_task_duration_seconds_count", (("task_type", "FailTask"),))] == 4
    assert after[("taskq_task_duration_seconds_count", (("task_type", "FibonacciTask"),))] == 1
    inf = ("taskq_task_duration_seconds_bucket", (("le", "+Inf"), ("task_type", "FailTask")))
    assert after[inf] == 4
    assert after[("taskq_workers_alive", ())] == 1
    assert after[("taskq_queue_depth", (("priority", "4"),))] == 0
    assert after[("taskq_oldest_pending_age_seconds", ())] == 0
