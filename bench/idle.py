"""Idle: what `tubeflow up` costs when nothing happens — CPU seconds per minute of its process tree (every service,
the slot processes), with no subscriptions and with 100 subscriptions waiting for their next check, against the NATS
server's own in the same run (the baseline: it answers every service's heartbeats and consumers)."""

from __future__ import annotations

import os
import time

import httpx

from bench.harness import Report, nats_server, process_tree, tubeflow

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICKS


def run(quick: bool) -> Report:
    window = 2.0 if quick else 30.0
    report = Report("idle")
    with nats_server() as nats, tubeflow(nats.url, ["up"]) as stack:
        up = stack.processes[0].pid
        time.sleep(1.0 if quick else 10.0)  # started: slots warmed, consumers made
        for subscriptions in (0, 10 if quick else 100):
            with httpx.Client(base_url=stack.base, timeout=30) as client:
                if subscriptions and client.get("/api/subscriptions").status_code == 404:
                    break  # a checkout from before subscriptions (for a before/after)
                while len(client.get("/api/subscriptions").json()) < subscriptions:
                    made = client.post(
                        "/api/subscriptions",
                        json={"url": f"http://127.0.0.1:9/feed-{time.monotonic_ns()}.xml", "interval": "1d"},
                    )
                    assert made.status_code == 201, made.text
            time.sleep(1.0 if quick else 10.0)  # their first checks (refused at once) are done
            tree = process_tree(up)
            # Both measured over the same window: the machine's noise falls on both.
            start_ours, start_nats = cpu_seconds(tree), cpu_seconds([nats.process.pid])
            time.sleep(window)
            ours = (cpu_seconds(tree) - start_ours) * 60.0 / window
            baseline = (cpu_seconds([nats.process.pid]) - start_nats) * 60.0 / window
            report.add(
                what=f"tubeflow up, idle, {subscriptions} subscriptions",
                cpu_s_per_min=round(ours, 3),
                nats_cpu_s_per_min=round(baseline, 3),
                ratio_to_nats=round(ours / baseline, 2) if baseline else "",
                window_s=window,
            )
    report.notes.append("CPU from /proc/<pid>/stat (utime + stime) of `tubeflow up` and its children")
    return report
