"""JSON logs: one object per line on stderr, for the service's own lines and uvicorn's.

A request line carries the method, the path (no query string), the status, the time and the sizes: never
the body, a header or the client's address (what a fleet sends is its machines' inventory).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, Dict

LOGGER = "doctor.service"


class JsonFormatter(logging.Formatter):
    """A log record as one JSON object: ts, level, logger, event/message, and the record's `fields`."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        doc: Dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": " ".join(record.getMessage().split()),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            doc.update(fields)
        if record.exc_info and record.exc_info[0] is not None:
            doc["error"] = f"{record.exc_info[0].__name__}: {' '.join(str(record.exc_info[1]).split())}"
        return json.dumps(doc, ensure_ascii=False, default=str)


def log_config(level: str = "info") -> Dict[str, Any]:
    """A logging.config dict for uvicorn: its loggers and the service's, all through JsonFormatter on stderr;
    uvicorn's access log off (the service writes its own request lines)."""
    handler = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
    lvl = level.upper()
    return {
        "version": 1, "disable_existing_loggers": False,
        "formatters": {"json": {"()": f"{__name__}.JsonFormatter"}},
        "handlers": {"stderr": handler},
        "loggers": {
            "uvicorn": {"handlers": ["stderr"], "level": lvl, "propagate": False},
            "uvicorn.error": {"handlers": ["stderr"], "level": lvl, "propagate": False},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
            LOGGER: {"handlers": ["stderr"], "level": lvl, "propagate": False},
        },
    }


def logger() -> logging.Logger:
    """The service's logger; given a JSON handler on stderr when nothing configured it (create_app outside uvicorn)."""
    log = logging.getLogger(LOGGER)
    if not log.handlers:
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(JsonFormatter())
        log.addHandler(h)
        log.setLevel(logging.INFO)
        log.propagate = False
    return log


def request_line(log: logging.Logger, fields: Dict[str, Any]) -> None:
    """One request's line (info; warning for 5xx)."""
    status = int(fields.get("status", 0))
    log.log(logging.WARNING if status >= 500 else logging.INFO, "request", extra={"fields": {"event": "request", **fields}})
