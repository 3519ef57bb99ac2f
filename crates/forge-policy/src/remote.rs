//! The remote backend: a real OPA (or `forge serve opa`) over the Data API.
//!
//! `POST {OPA_URL}/v1/data/<package path>` with `{"input": ...}`; the package document's
//! `allow`, `deny_reasons` and the gate's extra rules make the [`Decision`]. Connection
//! failures, timeouts, 5xx and unreadable answers are [`PolicyError::Unavailable`] (the spawn
//! API answers 502); any other 4xx is [`PolicyError::Rejected`]; an undefined package is
//! [`PolicyError::NotLoaded`].
//!
//! With a [`TokenSource`] every Data API request carries `Authorization: Bearer <token>`: the
//! Data API of `forge serve opa` answers only callers it can authenticate, and a real OPA can
//! be run with `--authentication=token`. A 401 or 403 is [`PolicyError::Unavailable`] naming
//! the credentials: no gate can be decided until the token is fixed (`OPA_TOKEN`), exactly as
//! in an outage, and the spawn API answers 502 rather than blaming the request.

use std::sync::Arc;
use std::time::Duration;

use crate::token::{StaticToken, TokenSource};

use forge_core::audit::AuditSink;
use serde_json::{Value, json};

use crate::{Decision, DecisionContext, DecisionObserver, PolicyError, PolicyName, input_hash};

/// Remote request timeout unless configured otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// A client of OPA's Data API.
#[derive(Debug, Clone)]
pub struct RemoteEngine {
    base: String,
    client: reqwest::Client,
    timeout: Duration,
    observer: DecisionObserver,
    token: Option<Arc<dyn TokenSource>>,
}

impl RemoteEngine {
    /// A client for the OPA at `opa_url` (e.g. `http://forge_opa:8181`), with the default
    /// timeout and no audit sink.
    pub fn new(opa_url: &str) -> Result<Self, PolicyError> {
        let invalid = |reason: String| PolicyError::InvalidUrl {
            url: opa_url.to_owned(),
            reason,
        };
        let url = reqwest::Url::parse(opa_url).map_err(|e| invalid(e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid(format!(
                "scheme {} is not http or https",
                url.scheme()
            )));
        }
        let client = reqwest::Client::builder()
            .build()
            .map_err(|e| invalid(e.to_string()))?;
        Ok(Self {
            base: opa_url.trim_end_matches('/').to_owned(),
            client,
            timeout: DEFAULT_TIMEOUT,
            observer: DecisionObserver::default(),
            token: None,
        })
    }

    /// Bounds each request, connect included.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sends `token` as the bearer token of every Data API request (`OPA_TOKEN`).
    pub fn with_token(self, token: impl Into<String>) -> Self {
        self.with_token_source(Arc::new(StaticToken::new(token)))
    }

    /// Sends a token from `source` with every Data API request.
    pub fn with_token_source(mut self, source: Arc<dyn TokenSource>) -> Self {
        self.token = Some(source);
        self
    }

    /// Where decisions are audited, and the audit events' default actor.
    pub fn with_audit(mut self, sink: Arc<dyn AuditSink>, actor: impl Into<String>) -> Self {
        self.observer = DecisionObserver::new(sink, actor);
        self
    }

    /// The Data API URL of a gate's package.
    pub fn url_for(&self, policy: PolicyName) -> String {
        format!("{}/v1/data/{}", self.base, policy.data_path())
    }

    /// `GET {OPA_URL}/health` within the timeout; [`PolicyError::Unavailable`] otherwise.
    pub async fn check(&self) -> Result<(), PolicyError> {
        let url = format!("{}/health", self.base);
        let unavailable = |reason: String| PolicyError::Unavailable {
            url: url.clone(),
            reason,
        };
        let response = self
            .client
            .get(&url)
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| unavailable(describe(&e, self.timeout)))?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(unavailable(format!("status {}", response.status())))
        }
    }

    /// Decides `policy` for `input` (a JSON object), counting and auditing the decision.
    pub async fn decide(&self, policy: PolicyName, input: &Value) -> Result<Decision, PolicyError> {
        self.decide_with(policy, input, &DecisionContext::default())
            .await
    }

    /// [`Self::decide`] with an explicit audit actor / resource.
    pub async fn decide_with(
        &self,
        policy: PolicyName,
        input: &Value,
        ctx: &DecisionContext,
    ) -> Result<Decision, PolicyError> {
        let started = std::time::Instant::now();
        let result = self.evaluate(policy, input).await;
        crate::decision::record_latency(policy, started.elapsed());
        self.observer.observe(policy, input, ctx, result)
    }

    async fn evaluate(&self, policy: PolicyName, input: &Value) -> Result<Decision, PolicyError> {
        if !input.is_object() {
            return Err(PolicyError::InvalidInput(format!(
                "input must be a JSON object, got {}",
                crate::embedded::json_type(input)
            )));
        }
        let url = self.url_for(policy);
        let unavailable = |reason: String| PolicyError::Unavailable {
            url: url.clone(),
            reason,
        };
        let mut request = self
            .client
            .post(&url)
            .timeout(self.timeout)
            .json(&json!({ "input": input }));
        if let Some(source) = &self.token {
            let token = source
                .token()
                .map_err(|e| unavailable(format!("no bearer token for it: {e}")))?;
            request = request.bearer_auth(token);
        }
        let response = request
            .send()
            .await
            .map_err(|e| unavailable(describe(&e, self.timeout)))?;
        let status = response.status();
        let header_id = response
            .headers()
            .get(crate::server::DECISION_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = tokio::time::timeout(self.timeout, response.bytes())
            .await
            .map_err(|_| unavailable(format!("no answer within {:?}", self.timeout)))?
            .map_err(|e| unavailable(describe(&e, self.timeout)))?;
        if status.is_server_error() {
            return Err(unavailable(format!("status {status}: {}", excerpt(&body))));
        }
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            return Err(unavailable(format!(
                "it refused this platform's credentials (status {status}; check OPA_TOKEN): {}",
                excerpt(&body)
            )));
        }
        if !status.is_success() {
            return Err(PolicyError::Rejected {
                url,
                status: status.as_u16(),
                message: excerpt(&body),
            });
        }
        let answer: Value = serde_json::from_slice(&body)
            .map_err(|e| unavailable(format!("answer is not JSON: {e}")))?;
        let doc = match answer.get("result") {
            None => {
                return Err(PolicyError::NotLoaded {
                    policy: policy.as_str().to_owned(),
                    package: policy.package().to_owned(),
                });
            }
            Some(Value::Object(doc)) => doc,
            Some(other) => {
                return Err(unavailable(format!(
                    "result for package {} is not an object: {other}",
                    policy.package()
                )));
            }
        };
        // `forge serve opa` sends its id in a header; a real OPA with decision logs in the body.
        let decision_id = header_id
            .or_else(|| {
                answer
                    .get("decision_id")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        Decision::from_document(policy, doc, decision_id, input_hash(input))
    }
}

fn describe(e: &reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        format!("no answer within {timeout:?}")
    } else if e.is_connect() {
        format!("cannot connect: {}", root_cause(e))
    } else {
        root_cause(e)
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// The start of a response body, for error messages.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    match text.char_indices().nth(200) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text.to_owned(),
    }
}
