"""Log lines: text for people, JSON (TUBEFLOW_LOG_FORMAT=json) for collectors; both carry the job and item being
handled, taken from a context variable that the consumers set around every event they handle."""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import datetime, timezone

CURRENT_JOB: ContextVar[tuple[str | None, str | None]] = ContextVar("tubeflow_job", default=(None, None))


class JobContext(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.job_id, record.item_id = CURRENT_JOB.get()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        job_id, item_id = getattr(record, "job_id", None), getattr(record, "item_id", None)
        if job_id:
            line["job_id"] = job_id
        if item_id:
            line["item_id"] = item_id
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        job_id, item_id = getattr(record, "job_id", None), getattr(record, "item_id", None)
        if job_id:
            text += f" [job={job_id}" + (f" item={item_id}]" if item_id else "]")
        return text


def setup_logging(fmt: str = "text", level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(JobContext())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("faststream", "tubeflow.faststream", "nats", "uvicorn.access", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
