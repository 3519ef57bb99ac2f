//! The seam services decide through, whichever backend sits behind it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use forge_core::audit::AuditSink;
use serde_json::Value;

use crate::{
    Decision, DecisionContext, EmbeddedEngine, PolicyError, PolicyName, RemoteEngine,
    remote::DEFAULT_TIMEOUT,
};

/// A policy backend. Implementations count and audit every decision themselves, so callers
/// cannot forget to.
#[async_trait]
pub trait PolicyEngine: Send + Sync {
    /// Decides `policy` for `input` (a JSON object), with an explicit audit actor / resource.
    async fn decide_with(
        &self,
        policy: PolicyName,
        input: &Value,
        ctx: &DecisionContext,
    ) -> Result<Decision, PolicyError>;

    /// Decides `policy` for `input` with the backend's default audit actor.
    async fn decide(&self, policy: PolicyName, input: &Value) -> Result<Decision, PolicyError> {
        self.decide_with(policy, input, &DecisionContext::default())
            .await
    }

    /// `embedded` or `remote`, for logs and health output.
    fn backend(&self) -> &'static str;

    /// Whether the backend can answer now (for readiness probes): embedded when the gates are
    /// loaded, remote when `GET /health` answers within the timeout.
    async fn check(&self) -> Result<(), PolicyError> {
        Ok(())
    }
}

#[async_trait]
impl PolicyEngine for EmbeddedEngine {
    async fn decide_with(
        &self,
        policy: PolicyName,
        input: &Value,
        ctx: &DecisionContext,
    ) -> Result<Decision, PolicyError> {
        // Pure CPU work: microseconds when cached, a few hundred for a cold spawn or action
        // decision. A hop to the blocking pool would add latency without saving any CPU.
        EmbeddedEngine::decide_with(self, policy, input, ctx)
    }

    fn backend(&self) -> &'static str {
        "embedded"
    }

    /// Ready when every gate is loaded: what the services decide through.
    async fn check(&self) -> Result<(), PolicyError> {
        match PolicyName::ALL.into_iter().find(|p| !self.has_policy(*p)) {
            Some(missing) => Err(PolicyError::NotLoaded {
                policy: missing.to_string(),
                package: missing.package().to_owned(),
            }),
            None => Ok(()),
        }
    }
}

#[async_trait]
impl PolicyEngine for RemoteEngine {
    async fn decide_with(
        &self,
        policy: PolicyName,
        input: &Value,
        ctx: &DecisionContext,
    ) -> Result<Decision, PolicyError> {
        RemoteEngine::decide_with(self, policy, input, ctx).await
    }

    fn backend(&self) -> &'static str {
        "remote"
    }

    async fn check(&self) -> Result<(), PolicyError> {
        RemoteEngine::check(self).await
    }
}

/// How a service gets its policy engine: a remote OPA when `opa_url` is set, else embedded
/// regorus with the bundled gates plus operator policies from `policy_dir`.
#[derive(Debug, Clone)]
pub struct PolicyConfig {
    /// `OPA_URL`; `None` = embedded.
    pub opa_url: Option<String>,
    /// Operator policy directory for the embedded engine.
    pub policy_dir: Option<PathBuf>,
    /// Remote request timeout.
    pub timeout: Duration,
    /// Bearer token for the remote OPA (`OPA_TOKEN`).
    pub opa_token: Option<String>,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            opa_url: None,
            policy_dir: None,
            timeout: DEFAULT_TIMEOUT,
            opa_token: None,
        }
    }
}

impl PolicyConfig {
    /// Builds the configured backend; decisions are audited to `audit` as `actor`.
    pub fn build(
        &self,
        audit: Arc<dyn AuditSink>,
        actor: &str,
    ) -> Result<Arc<dyn PolicyEngine>, PolicyError> {
        if let Some(url) = &self.opa_url {
            let mut remote = RemoteEngine::new(url)?
                .with_timeout(self.timeout)
                .with_audit(audit, actor);
            if let Some(token) = &self.opa_token {
                remote = remote.with_token(token);
            }
            return Ok(Arc::new(remote));
        }
        let mut builder = EmbeddedEngine::builder().audit(audit, actor);
        if let Some(dir) = &self.policy_dir {
            builder = builder.operator_dir(dir);
        }
        Ok(Arc::new(builder.build()?))
    }
}
