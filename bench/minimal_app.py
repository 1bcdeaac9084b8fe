"""The least a Flask app can be: one route answering the same JSON document as ``/api/info``.

The HTTP table serves it from bare uWSGI and from gunicorn sync beside the real app. Flask's
own cost per request is common to both servers and caps the ratio between them: what this pair
measures is the most any server setting could make of the real app's ratio."""

from __future__ import annotations

import os
import socket
import threading

from flask import Flask, jsonify
from flask.typing import ResponseReturnValue

app = Flask(__name__)
app.json.sort_keys = False  # type: ignore[attr-defined]


@app.get("/api/info")
def info() -> ResponseReturnValue:
    return jsonify(
        host=socket.gethostname(),
        node=socket.gethostname(),
        pid=os.getpid(),
        worker_id=None,
        processes=4,
        threads=1,
        thread=threading.current_thread().name,
        uwsgi_version=None,
        server="minimal",
    )
