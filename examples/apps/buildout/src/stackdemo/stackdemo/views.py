"""Views on any object (e.g. the Zope root): `@@celery-enqueue?marker=NAME` sends a task,
`@@celery-result?id=ID` shows its state, `@@solr-index?uid=&title=&text=` indexes a document
into the core collective.solr would use, `@@solr-search?q=` lists the UIDs found."""

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from xml.sax.saxutils import escape

from Products.Five.browser import BrowserView


def _plain(view, status, body):
    view.request.response.setStatus(status)
    view.request.response.setHeader("Content-Type", "text/plain; charset=utf-8")
    return body


class CeleryEnqueue(BrowserView):
    def __call__(self):
        if not os.environ.get("CELERY_BROKER_URL"):
            return _plain(self, 503, "no Celery broker configured")
        from stackdemo.tasks import mark

        return _plain(self, 200, mark.delay(self.request.form["marker"]).id)


class CeleryResult(BrowserView):
    def __call__(self):
        if not os.environ.get("CELERY_BROKER_URL"):
            return _plain(self, 503, "no Celery broker configured")
        from stackdemo.tasks import app

        result = app.AsyncResult(self.request.form["id"])
        value = result.result if result.successful() else ""
        return _plain(self, 200, "%s %s" % (result.state, value))


def _solr(path, body=None):
    """A request to the core named by collective.solr's environment; (status, text)."""
    host = os.environ["COLLECTIVE_SOLR_HOST"]
    url = "http://%s:%s%s%s" % (
        host,
        os.environ.get("COLLECTIVE_SOLR_PORT", "8983"),
        os.environ.get("COLLECTIVE_SOLR_BASE", "/solr/plone"),
        path,
    )
    data = body.encode("utf-8") if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "text/xml"})
    # Straight to Solr: a proxy from the environment must not get in between.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=30) as response:
            return response.status, response.read().decode("utf-8")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")


class SolrIndex(BrowserView):
    def __call__(self):
        if not os.environ.get("COLLECTIVE_SOLR_HOST"):
            return _plain(self, 503, "no Solr configured")
        form = self.request.form
        fields = [
            ("UID", form["uid"]),
            ("id", form["uid"]),
            ("Title", form.get("title", "")),
            ("SearchableText", "%s %s" % (form.get("title", ""), form.get("text", ""))),
            ("portal_type", "Document"),
            ("review_state", "published"),
            ("allowedRolesAndUsers", "Anonymous"),
            ("path_depth", "2"),
            ("is_folderish", "false"),
        ]
        doc = "".join(
            '<field name="%s">%s</field>' % (name, escape(value)) for name, value in fields
        )
        status, body = _solr("/update?commit=true", "<add><doc>%s</doc></add>" % doc)
        return _plain(self, 200 if status == 200 else 502, "%s %s" % (status, body))


class SolrSearch(BrowserView):
    def __call__(self):
        if not os.environ.get("COLLECTIVE_SOLR_HOST"):
            return _plain(self, 503, "no Solr configured")
        query = urllib.parse.urlencode({"q": self.request.form["q"], "fl": "UID", "wt": "json"})
        status, body = _solr("/select?" + query)
        if status != 200:
            return _plain(self, 502, "%s %s" % (status, body))
        docs = json.loads(body)["response"]["docs"]
        return _plain(self, 200, "\n".join(sorted(d["UID"] for d in docs)))
