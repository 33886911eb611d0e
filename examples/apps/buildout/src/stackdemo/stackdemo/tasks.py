"""The app's Celery app. Celery reads CELERY_BROKER_URL and CELERY_RESULT_BACKEND from the
environment provision gives the clients and the workers; workers run it directly
(`bin/celery -A stackdemo.tasks worker`), since collective.celery's pcelery fails on Zope 6."""

import os
import socket

from celery import Celery

app = Celery("stackdemo")
app.conf.broker_connection_retry_on_startup = True
app.conf.beat_schedule = {"tick": {"task": "stackdemo.tasks.tick", "schedule": 2.0}}

# Relative to the worker's working directory, the live release: its var/ is shared.
MARKERS = os.path.join("var", "celery-markers")


def _write(name, text, mode="w"):
    os.makedirs(MARKERS, exist_ok=True)
    with open(os.path.join(MARKERS, name), mode) as f:
        f.write(text)


@app.task
def mark(name):
    """Leaves a marker file named `name` holding the worker's host name."""
    host = socket.gethostname()
    _write(name, host)
    return host


@app.task(bind=True)
def tick(self):
    """Periodic (beat): records which host ran it and which beat (`pid@host`) sent it."""
    _write("ticks", "%s %s\n" % (socket.gethostname(), self.request.origin), "a")
