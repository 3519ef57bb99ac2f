//! The request id on the request's tracing span, checked with a recording subscriber.
//!
//! Its own test binary, and the only test in it: tracing caches callsite interest and the
//! maximum level process-wide, so a test that installs a subscriber races every other test of
//! the same process that hits the same callsites without one.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{Extension, Request};
use axum::http::HeaderValue;
use axum::routing::get;
use forge_http::{REQUEST_ID_HEADER, RequestId};
use tower::ServiceExt;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};

fn app() -> Router {
    let routes = Router::new().route(
        "/id",
        get(|Extension(id): Extension<RequestId>| async move {
            tracing::info!("handling");
            id.to_string()
        }),
    );
    forge_http::finish(routes, forge_http::DEFAULT_BODY_LIMIT)
}

async fn call(path: &str, header: Option<HeaderValue>) {
    let mut req = Request::get(path);
    if let Some(v) = header {
        req = req.header(REQUEST_ID_HEADER, v);
    }
    let resp = app()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    to_bytes(resp.into_body(), usize::MAX).await.unwrap();
}

/// Collects the `request_id` of every new span and of the span around every event.
#[derive(Clone, Default)]
struct Recorder {
    spans: Arc<Mutex<Vec<String>>>,
    events_in: Arc<Mutex<Vec<String>>>,
}

struct IdVisitor(Option<String>);

impl Visit for IdVisitor {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "request_id" {
            self.0 = Some(format!("{value:?}"));
        }
    }
}

struct SpanId(String);

impl<S> tracing_subscriber::Layer<S> for Recorder
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: Context<'_, S>,
    ) {
        let mut v = IdVisitor(None);
        attrs.record(&mut v);
        if let Some(rid) = v.0 {
            self.spans.lock().unwrap().push(rid.clone());
            ctx.span(id).unwrap().extensions_mut().insert(SpanId(rid));
        }
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        let scope = ctx.event_scope(event).into_iter().flatten();
        for span in scope {
            if let Some(SpanId(rid)) = span.extensions().get::<SpanId>() {
                self.events_in.lock().unwrap().push(rid.clone());
            }
        }
    }
}

#[tokio::test(flavor = "current_thread")]
async fn the_id_is_recorded_on_the_request_span() {
    let recorder = Recorder::default();
    let subscriber = tracing_subscriber::registry().with(recorder.clone());
    let _guard = tracing::subscriber::set_default(subscriber);
    call("/id", Some(HeaderValue::from_static("traced-1"))).await;
    assert_eq!(*recorder.spans.lock().unwrap(), ["traced-1"]);
    assert_eq!(
        *recorder.events_in.lock().unwrap(),
        ["traced-1", "traced-1"],
        "the handler's log line and the access log line are inside the request span"
    );
}
