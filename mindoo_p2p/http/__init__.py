"""The daemon's local HTTP interface on 127.0.0.1: a JSON API (OpenAPI at /openapi.json), a
server-sent event stream, Prometheus metrics at /metrics and a web page, served by hypercorn's
trio worker inside the daemon's nursery.

==================  ============================================================================
module              responsibility
==================  ============================================================================
`auth`              the API key file, one-time login links, Host/Origin/key checks (pure)
`openapi`           `Operation` rows and the OpenAPI document made from them
`api`               what each operation does (`HttpApi`) and the `OPERATIONS` table
`app`               the ASGI app: guard, routes from the table, JSON errors, page, metrics
`events`            daemon events as server-sent events
`json_patch`        RFC 6902 patches applied as one Automerge change
`metrics`           `DaemonMetrics`: one Prometheus registry per daemon
`request_body`      bounded request bodies
`server`            the hypercorn server task (port, fallback, shutdown with the daemon)
`endpoint`          `HttpEndpoint`: the running API's address and one-time login links
`static/`           the web page (plain HTML, CSS and JS; no build step)
==================  ============================================================================

Importing this package imports none of its modules: the daemon pulls in ``metrics`` always
and the web stack (starlette, hypercorn) only when it serves HTTP.
"""
