"""OpenTelemetry tracing: off unless the standard ``OTEL_*`` variables ask for it.

On (:func:`wanted`), the app factory builds one :class:`Tracing` per process (each worker of
``wallet serve --workers N`` builds its own, since the factory runs in the worker), which:

- wraps the whole ASGI app in OpenTelemetry's ASGI middleware (the HTTP server span; a caller's
  W3C ``traceparent`` becomes its parent), seamless deliveries included;
- instruments asyncpg (a span per statement, never its parameters) and the app's HTTP client to
  PSPs and the operator's webhook (a client span each, its ``traceparent`` sent along);
- turns on the wallet's own spans (:func:`span`): a delivery's envelope, admission, posting and
  response under its server span, the group-commit batch linked to the postings it carried,
  payments and outbox deliveries.

Tracing is the process's, not an app's: the instrumentations patch libraries process-wide, so
:data:`ON` and the tracer are module state too, and one app at a time traces in a process
(every server process runs one; a test starts a traced app of its own, with :func:`configure`).

Off, nothing of that is installed: the app is not wrapped, no library is patched, and the
wallet's span sites cost one read of :data:`ON` each. Span exporting is OTLP over HTTP with a
batch processor; the exporter, the endpoint, the service name (``wallet`` unless
``OTEL_SERVICE_NAME``) and the sampler follow the standard variables.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

from opentelemetry import propagate, trace
from opentelemetry.trace import Link, Span
from opentelemetry.util.types import AttributeValue

if TYPE_CHECKING:
    # The SDK and the instrumentations are imported when tracing starts: an untraced process
    # (the CLI, a worker with tracing off) never loads them.
    import httpx
    from opentelemetry.sdk.trace import TracerProvider
    from starlette.types import ASGIApp, Scope

# Whether this process makes spans. The one thing a span site reads when tracing is off; set by
# Tracing.start and cleared by Tracing.stop.
ON = False
_tracer: trace.Tracer = trace.NoOpTracer()
# What the next app factory uses instead of building its own provider (tests: an in-memory one).
_configured: TracerProvider | None = None

SERVICE = "wallet"
# What OTEL_TRACES_EXPORTER may name (otlp_proto_http: the SDK's own name for this otlp). An
# endpoint alone means otlp, as in the SDK.
OTLP = frozenset({"otlp", "otlp_proto_http"})
EXPORTERS = OTLP | {"console", "none"}


def wanted(env: Mapping[str, str] | None = None) -> bool:
    """Whether the environment asks for traces: an OTLP endpoint (all signals' or the traces'
    own), or ``OTEL_TRACES_EXPORTER`` naming an exporter; ``OTEL_SDK_DISABLED=true`` wins. An
    exporter other than ``otlp`` (``otlp_proto_http``), ``console`` or ``none`` is a
    :class:`ConfigError`: only OTLP over HTTP is installed."""
    from app.config import ConfigError

    env = os.environ if env is None else env
    named = exporters(env)
    if named - EXPORTERS:
        unknown = ", ".join(sorted(named - EXPORTERS))
        raise ConfigError(
            f"OTEL_TRACES_EXPORTER: unknown exporter {unknown} (otlp, console or none)"
        )
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    # `none` alone says no traces, whatever endpoint is set for all signals (the OTel spec).
    if named == {"none"}:
        return False
    if env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        return True
    return bool(named - {"none"})


def exporters(env: Mapping[str, str]) -> frozenset[str]:
    """The exporters ``OTEL_TRACES_EXPORTER`` names (a comma-separated list)."""
    raw = env.get("OTEL_TRACES_EXPORTER", "")
    return frozenset(e.strip().lower() for e in raw.split(",") if e.strip())


def configure(provider: TracerProvider | None) -> None:
    """Make the apps created from now on trace into ``provider`` whatever the environment says
    (None: back to the environment). For tests, with an in-memory exporter."""
    global _configured
    _configured = provider


def for_app(enabled: bool) -> Tracing | None:
    """The tracing of a new app: the configured provider, else one built from the environment
    when ``enabled`` (the settings' ``tracing``), else None."""
    if _configured is not None:
        return Tracing(_configured)
    if not enabled:
        return None
    return Tracing(_provider_from_env())


def _provider_from_env() -> TracerProvider:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    # The SDK's sampler comes from OTEL_TRACES_SAMPLER(_ARG); the resource from
    # OTEL_RESOURCE_ATTRIBUTES, OTEL_SERVICE_NAME overriding the service name given here.
    resource = Resource.create({SERVICE_NAME: os.environ.get("OTEL_SERVICE_NAME") or SERVICE})
    provider = TracerProvider(resource=resource)
    named = exporters(os.environ) - {"none"} or {"otlp"}
    if named & OTLP:
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    if "console" in named:
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    return provider


def _span_details(scope: Scope) -> tuple[str, dict[str, AttributeValue]]:
    # The method only: the raw path holds player ids. The route template is known once the
    # request was routed; app.web.http.tracked renames the span then (name_server_span).
    return str(scope.get("method", "HTTP")), {}


class Tracing:
    """One app's tracing: its provider and what it installs while the app runs."""

    def __init__(self, provider: TracerProvider) -> None:
        from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor

        self.provider = provider
        self._asyncpg = AsyncPGInstrumentor()  # type: ignore[no-untyped-call]
        self._clients: list[httpx.AsyncClient] = []
        self._started = False

    def wrap(self, app: ASGIApp) -> ASGIApp:
        """``app`` behind the HTTP server span."""
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

        return OpenTelemetryMiddleware(
            app,
            default_span_details=_span_details,
            tracer_provider=self.provider,
            # No span per ASGI message: a request is one span, its work the wallet's own.
            exclude_spans=["receive", "send"],
        )

    def start(self, *clients: httpx.AsyncClient) -> None:
        """Install the instrumentation (in the lifespan, so in the serving process)."""
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

        global ON, _tracer
        self._asyncpg.instrument(tracer_provider=self.provider)
        for client in clients:
            HTTPXClientInstrumentor.instrument_client(client, tracer_provider=self.provider)
            self._clients.append(client)
        self._started = True
        _tracer = self.provider.get_tracer("app")
        ON = True

    def stop(self) -> None:
        """Remove what :meth:`start` installed and flush the spans not yet exported."""
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

        global ON, _tracer
        ON = False
        _tracer = trace.NoOpTracer()
        for client in self._clients:
            HTTPXClientInstrumentor.uninstrument_client(client)
        self._clients.clear()
        if self._started:
            self._started = False
            self._asyncpg.uninstrument()
        self.provider.shutdown()


def installed() -> bool:
    """Whether any instrumentation is active in this process (what tests of "off" check)."""
    import sys

    asyncpg = sys.modules.get("opentelemetry.instrumentation.asyncpg")
    return ON or (
        asyncpg is not None and asyncpg.AsyncPGInstrumentor().is_instrumented_by_opentelemetry
    )


@contextlib.contextmanager
def _span(
    name: str, attributes: Mapping[str, AttributeValue] | None, links: Sequence[Link]
) -> Iterator[Span]:
    with _tracer.start_as_current_span(name, attributes=attributes, links=links) as s:
        yield s


_OFF: contextlib.nullcontext[None] = contextlib.nullcontext()


def span(
    name: str,
    attributes: Mapping[str, AttributeValue] | None = None,
    links: Sequence[Link] = (),
) -> contextlib.AbstractContextManager[Span | None]:
    """A child span of the current one, made current; when tracing is off, a shared no-op
    context (yielding None) and nothing else."""
    if not ON:
        return _OFF
    return _span(name, attributes, links)


def annotate(attributes: Mapping[str, AttributeValue | None]) -> None:
    """Set ``attributes`` (those not None) on the current span, if tracing."""
    if ON:
        current = trace.get_current_span()
        for key, value in attributes.items():
            if value is not None:
                current.set_attribute(key, value)


def current() -> Span | None:
    """The current span when tracing (to link a batch to), else None."""
    return trace.get_current_span() if ON else None


def link(spans: Sequence[Span | None]) -> list[Link]:
    """Links to the recorded spans among ``spans``."""
    return [Link(s.get_span_context()) for s in spans if s is not None and s.is_recording()]


def server_span(request_id: str) -> Span:
    """The HTTP server span (the current span where a request enters the app), given the
    request's correlation id."""
    server = trace.get_current_span()
    server.set_attribute("wallet.request_id", request_id)
    return server


# What the ASGI instrumentation records of the raw URL, which holds player ids (and, in a query,
# anything a caller sends): replaced by the route template once it is known.
_RAW_URL = ("http.target", "http.url", "url.path", "url.full", "url.query")


def name_server_span(server: Span, scope: Scope, route: str) -> None:
    """Name the server span after the route that answered, once it is known, and put the route
    template where the instrumentation wrote the raw path and query."""
    server.update_name(f"{scope['method']} {route}")
    server.set_attribute("http.route", route)
    recorded = getattr(server, "attributes", None) or {}
    for key in _RAW_URL:
        if key in recorded:
            server.set_attribute(key, "" if key == "url.query" else route)


def inject(headers: dict[str, str]) -> None:
    """Add the current span's ``traceparent`` (the configured propagators' headers) to
    ``headers`` for an outgoing call. The httpx instrumentation replaces it with its own client
    span's where it sees the call; this keeps it there where it does not (a client with another
    transport, an excluded URL)."""
    if ON:
        propagate.inject(headers)


def ids() -> tuple[str, str] | None:
    """(trace_id, span_id) of the current span in W3C hex, when one is recording."""
    if not ON:
        return None
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")
