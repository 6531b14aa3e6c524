"""The back office at ``/admin``: server-rendered pages for support, finance and on-call, built
on the API's own operations (docs/backoffice.md). ``app.admin.site.routes`` is mounted by
``app.main``; nothing here is part of the OpenAPI document."""
