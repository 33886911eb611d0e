"""Create the Plone site if it is missing: `bin/client1 run scripts/create_site.py [SITE_ID]`.

Runs with the ZEO server up (a running client holds no lock on ZEO storage). Idempotent: an
existing site is left as it is.
"""

import sys

import transaction
from AccessControl.SecurityManagement import newSecurityManager
from AccessControl.SpecialUsers import system
from Products.CMFPlone.factory import addPloneSite
from Testing.makerequest import makerequest

site_id = sys.argv[-1] if len(sys.argv) > 1 and not sys.argv[-1].endswith(".py") else "Plone"

app = makerequest(app)  # noqa: F821 -- `app` is the Zope root, given by `bin/client1 run`
newSecurityManager(None, system)

if site_id in app.objectIds():
    print(f"site {site_id} exists")
else:
    addPloneSite(
        app,
        site_id,
        title="Plone site",
        setup_content=False,
        default_language="en",
        extension_ids=("plone.app.contenttypes:default",),
    )
    transaction.commit()
    print(f"site {site_id} created")
