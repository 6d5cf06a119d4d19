"""``devclaw observe``: a live web view of one workspace (workers, queues, timelines, analytics, triage).

Modules, in the order data flows through them:

- ``feed``: reads ``memory/audit.log`` incrementally (an offset per file, across rotation);
- ``history``: digests each new record into issue timelines, daily analytics, token usage and triage
  reasons, so no request ever rescans the log;
- ``board``: the workers from projects.json and the queues, read from the trackers in the background;
- ``charts``: server-side SVG charts (pygal), no JavaScript library;
- ``app``: the Starlette application, its pages and JSON API, the token and CSRF rules, server-sent events.
"""
