"""Log lines name the job and item being handled; JSON lines parse."""

from __future__ import annotations

import io
import json
import logging

from services.runtime.logs import CURRENT_JOB, JobContext, JsonFormatter, TextFormatter


def capture(formatter: logging.Formatter) -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(JobContext())
    handler.setFormatter(formatter)
    logger = logging.getLogger(f"test.{id(stream)}")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger, stream


def test_json_lines_carry_job_and_item_while_an_event_is_handled():
    logger, stream = capture(JsonFormatter())
    logger.info("before")
    token = CURRENT_JOB.set(("01m80kr9ngrx981wzxbmtbw7d3", "0002"))
    try:
        logger.warning("during %s", "work")
    finally:
        CURRENT_JOB.reset(token)
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert "job_id" not in first and first["message"] == "before"
    assert second == {
        **second,
        "level": "warning",
        "message": "during work",
        "job_id": "01m80kr9ngrx981wzxbmtbw7d3",
        "item_id": "0002",
    }


def test_text_lines_name_the_job_too():
    logger, stream = capture(TextFormatter("%(levelname)s %(message)s"))
    token = CURRENT_JOB.set(("01m80kr9ngrx981wzxbmtbw7d3", None))
    try:
        logger.info("resolving")
    finally:
        CURRENT_JOB.reset(token)
    assert stream.getvalue().strip() == "INFO resolving [job=01m80kr9ngrx981wzxbmtbw7d3]"
