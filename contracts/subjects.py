"""Where events travel: ``tubeflow.job.<job_id>.<type>``."""

from __future__ import annotations

SUBJECT_PREFIX = "tubeflow.job"
ALL_EVENTS = f"{SUBJECT_PREFIX}.>"


def subject(job_id: str, event_type: str) -> str:
    return f"{SUBJECT_PREFIX}.{job_id}.{event_type}"


def subject_filter(event_type: str) -> str:
    """The subject filter that matches one event type across all jobs."""
    return f"{SUBJECT_PREFIX}.*.{event_type}"


def job_filter(job_id: str) -> str:
    return f"{SUBJECT_PREFIX}.{job_id}.>"


def job_id_of(subject_: str) -> str:
    """The job id in an event's subject ``tubeflow.job.<job_id>.<type>`` ("" for any other subject)."""
    if not subject_.startswith(SUBJECT_PREFIX + "."):
        return ""
    return subject_[len(SUBJECT_PREFIX) + 1 :].split(".", 1)[0]
