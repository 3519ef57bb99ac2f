//! The one call to the model: `POST {url}/chat/completions` in OpenAI's shape (`model`,
//! `messages`, `max_tokens`), reading `choices[0].message.content` and `usage.total_tokens`.
//!
//! Bounded in time (the configured timeout covers connect and answer) and in size (an answer
//! past [`MAX_ANSWER_BYTES`] is an error, never buffered whole). Redirects are not followed:
//! the operator named the endpoint, and a redirect could point anywhere.

use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use super::{LlmConfig, LlmError};

/// Largest answer body read from the endpoint.
const MAX_ANSWER_BYTES: usize = 256 * 1024;

/// One message of the conversation.
#[derive(Debug, Clone, Serialize)]
pub struct Message {
    pub role: &'static str,
    pub content: String,
}

/// What the model answered.
#[derive(Debug, Clone)]
pub struct Completion {
    pub content: String,
    /// `usage.total_tokens`, when the endpoint reports it.
    pub total_tokens: Option<u64>,
}

/// A chat-completions client for one configured endpoint and model.
#[derive(Clone)]
pub struct ChatClient {
    http: reqwest::Client,
    endpoint: String,
    model: String,
    api_key: Option<String>,
}

impl ChatClient {
    pub fn new(config: &LlmConfig) -> Result<Self, LlmError> {
        let http = reqwest::Client::builder()
            .connect_timeout(config.timeout.min(Duration::from_secs(5)))
            .timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| LlmError::Config(format!("cannot build the http client: {e}")))?;
        Ok(Self {
            http,
            endpoint: format!("{}/chat/completions", config.url.trim_end_matches('/')),
            model: config.model.clone(),
            api_key: config.api_key.clone(),
        })
    }

    /// Asks the model once; `max_tokens` bounds the completion.
    pub async fn complete(
        &self,
        messages: &[Message],
        max_tokens: u64,
    ) -> Result<Completion, LlmError> {
        let body = serde_json::json!({
            "model": self.model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": 0,
        });
        let mut req = self.http.post(&self.endpoint).json(&body);
        if let Some(key) = &self.api_key {
            req = req.bearer_auth(key);
        }
        let unavailable = |e: reqwest::Error| LlmError::Unavailable(without_url(e));
        let mut resp = req.send().await.map_err(unavailable)?;
        let status = resp.status();
        let mut bytes = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(unavailable)? {
            if bytes.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(LlmError::BadAnswer(format!(
                    "the answer is larger than {MAX_ANSWER_BYTES} bytes"
                )));
            }
            bytes.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            return Err(LlmError::Unavailable(format!(
                "the endpoint answered {status}"
            )));
        }
        parse_completion(&bytes)
    }
}

/// The error without the endpoint's URL, which may carry credentials in its user part.
fn without_url(e: reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    format!("{what}: {}", e.without_url())
}

/// `choices[0].message.content` and `usage.total_tokens` of a chat-completions answer.
fn parse_completion(bytes: &[u8]) -> Result<Completion, LlmError> {
    let v: Value = serde_json::from_slice(bytes)
        .map_err(|e| LlmError::BadAnswer(format!("the answer is not JSON: {e}")))?;
    let content = v
        .pointer("/choices/0/message/content")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            LlmError::BadAnswer("the answer has no choices[0].message.content string".into())
        })?;
    Ok(Completion {
        content: content.to_owned(),
        total_tokens: v.pointer("/usage/total_tokens").and_then(Value::as_u64),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_content_and_usage() {
        let c = parse_completion(
            br#"{"choices":[{"message":{"role":"assistant","content":"{}"}}],"usage":{"total_tokens":42}}"#,
        )
        .unwrap();
        assert_eq!(c.content, "{}");
        assert_eq!(c.total_tokens, Some(42));
        let none = parse_completion(br#"{"choices":[]}"#).unwrap_err();
        assert!(none.to_string().contains("choices[0]"), "{none}");
    }
}
