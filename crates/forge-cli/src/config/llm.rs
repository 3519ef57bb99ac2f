//! LLM proposals (crate forge_lifecycle::llm): the OpenAI-compatible endpoint that proposes
//! lab commands and hints, and the token budgets. Off unless both URL and model are set.

use anyhow::bail;
use clap::Args;
use forge_lifecycle::llm::LlmConfig;

use super::spawn::DurationArg;

#[derive(Args, Debug, Clone)]
pub struct LlmArgs {
    /// Base URL of an OpenAI-compatible API (`…/v1`; `/chat/completions` is appended) whose
    /// model proposes lab commands and hints, under the LLM gate [default: none, proposals off]
    #[arg(long, env = "FORGE_LLM_URL", value_name = "URL")]
    pub llm_url: Option<String>,
    /// The model asked (required with the URL)
    #[arg(long, env = "FORGE_LLM_MODEL", value_name = "NAME")]
    pub llm_model: Option<String>,
    /// Bearer key sent to the endpoint [default: none]
    #[arg(
        long,
        env = "FORGE_LLM_API_KEY",
        value_name = "KEY",
        hide_env_values = true
    )]
    pub llm_api_key: Option<String>,
    /// Tokens (`usage.total_tokens`) one lab may spend over its life
    #[arg(long, env = "FORGE_LLM_LAB_TOKENS", default_value_t = LlmConfig::DEFAULT_LAB_TOKENS, value_name = "N")]
    pub llm_lab_tokens: u64,
    /// Tokens one tenant's labs may spend per UTC day, on each lab host
    #[arg(long, env = "FORGE_LLM_TENANT_TOKENS", default_value_t = LlmConfig::DEFAULT_TENANT_TOKENS, value_name = "N")]
    pub llm_tenant_tokens: u64,
    /// Longest wait for one answer of the endpoint
    #[arg(
        long,
        env = "FORGE_LLM_TIMEOUT",
        default_value = "30s",
        value_name = "DURATION"
    )]
    pub llm_timeout: DurationArg,
}

impl LlmArgs {
    /// The platform's LLM settings: `None` without a URL. Errors name the variable at fault.
    pub fn llm_config(&self) -> anyhow::Result<Option<LlmConfig>> {
        let Some(url) = &self.llm_url else {
            if self.llm_model.is_some() || self.llm_api_key.is_some() {
                bail!("FORGE_LLM_MODEL and FORGE_LLM_API_KEY need FORGE_LLM_URL (--llm-url)");
            }
            return Ok(None);
        };
        super::require_http_url("FORGE_LLM_URL (--llm-url)", url)?;
        let Some(model) = self.llm_model.as_ref().filter(|m| !m.trim().is_empty()) else {
            bail!("FORGE_LLM_MODEL (--llm-model) is required with FORGE_LLM_URL");
        };
        for (name, n) in [
            (
                "FORGE_LLM_LAB_TOKENS (--llm-lab-tokens)",
                self.llm_lab_tokens,
            ),
            (
                "FORGE_LLM_TENANT_TOKENS (--llm-tenant-tokens)",
                self.llm_tenant_tokens,
            ),
        ] {
            if n == 0 {
                bail!("{name} must be at least 1");
            }
        }
        let timeout = self.llm_timeout.0;
        if timeout.is_zero() || timeout > std::time::Duration::from_secs(300) {
            bail!("FORGE_LLM_TIMEOUT (--llm-timeout) must be 1s-300s");
        }
        let mut c = LlmConfig::new(url.trim_end_matches('/'), model.trim());
        c.api_key = self.llm_api_key.clone();
        c.max_tokens_per_lab = self.llm_lab_tokens;
        c.max_tokens_per_tenant = self.llm_tenant_tokens;
        c.timeout = timeout;
        Ok(Some(c))
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cmd {
        #[command(flatten)]
        llm: LlmArgs,
    }

    fn config(args: &[&str]) -> anyhow::Result<Option<LlmConfig>> {
        let c = Cmd::try_parse_from(std::iter::once("up").chain(args.iter().copied()))?;
        c.llm.llm_config()
    }

    #[test]
    fn off_by_default_and_checked_when_on() {
        assert_eq!(config(&[]).unwrap(), None);
        let c = config(&[
            "--llm-url",
            "http://127.0.0.1:8000/v1/",
            "--llm-model",
            "m",
            "--llm-lab-tokens",
            "1000",
            "--llm-timeout",
            "10s",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(c.url, "http://127.0.0.1:8000/v1");
        assert_eq!(c.max_tokens_per_lab, 1000);
        assert_eq!(c.max_tokens_per_tenant, LlmConfig::DEFAULT_TENANT_TOKENS);
        assert_eq!(c.timeout, std::time::Duration::from_secs(10));
        for (bad, why) in [
            (vec!["--llm-url", "http://x/v1"], "FORGE_LLM_MODEL"),
            (vec!["--llm-model", "m"], "need FORGE_LLM_URL"),
            (
                vec!["--llm-url", "x/v1", "--llm-model", "m"],
                "FORGE_LLM_URL",
            ),
            (
                vec![
                    "--llm-url",
                    "http://x",
                    "--llm-model",
                    "m",
                    "--llm-lab-tokens",
                    "0",
                ],
                "FORGE_LLM_LAB_TOKENS",
            ),
        ] {
            let e = config(&bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }
}
