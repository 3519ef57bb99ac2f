//! Client commands against a running platform: `forge spawn|status|score|check|submit|exec|shell|pools`.
//!
//! They talk HTTP to the services on their default ports ([`Service::default_port`]) of
//! `FORGE_HOST`, or at the URLs `FORGE_SPAWN_URL`, `FORGE_ORCHESTRATOR_URL`, `FORGE_WORKER_URL`
//! and `FORGE_SCOREBOARD_URL` name (a distributed platform, `scripts/cluster.sh`). Without
//! `--token` they mint a short-lived token for `--tenant`/`--sub` from the data dir's HS256
//! secret, which is what a learner on the `forge up` machine wants; against a remote platform,
//! pass the token you were given.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use forge_auth::roles;
use forge_http::Service;
use serde_json::{Value, json};

/// Where the platform is and who is calling.
#[derive(Args, Clone, Debug)]
#[command(next_help_heading = "Platform")]
pub struct Endpoint {
    /// Host the services listen on, each on its default port
    #[arg(long, env = "FORGE_HOST", default_value = "127.0.0.1")]
    pub host: String,
    /// URL of the spawn service [default: http://FORGE_HOST:8082]
    #[arg(long, env = "FORGE_SPAWN_URL", value_name = "URL")]
    pub spawn_url: Option<String>,
    /// URL of the orchestrator [default: http://FORGE_HOST:8083]
    #[arg(long, env = "FORGE_ORCHESTRATOR_URL", value_name = "URL")]
    pub orchestrator_url: Option<String>,
    /// URL of the worker agent [default: http://FORGE_HOST:8084]
    #[arg(long, env = "FORGE_WORKER_URL", value_name = "URL")]
    pub worker_url: Option<String>,
    /// URL of the scoreboard [default: http://FORGE_HOST:8086]
    #[arg(long, env = "FORGE_SCOREBOARD_URL", value_name = "URL")]
    pub scoreboard_url: Option<String>,
    #[command(flatten)]
    pub caller: Caller,
}

/// Who is calling: a bearer token, or the tenant and subject of one minted locally.
#[derive(Args, Clone, Debug)]
pub struct Caller {
    /// Bearer token [default: minted from the data dir's secret]
    #[arg(long, env = "FORGE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Tenant of the minted token
    #[arg(long, env = "FORGE_TENANT", default_value = "demo")]
    pub tenant: String,
    /// Subject of the minted token
    #[arg(long, env = "FORGE_SUB", default_value = "demo-learner")]
    pub sub: String,
}

impl Caller {
    /// `--token`, else one minted from the secret in `dir` (a learner's roles).
    pub fn token(&self, dir: &Path) -> anyhow::Result<String> {
        self.token_with(dir, &[roles::SPAWN, roles::SCORE_READ])
    }

    /// `--token`, else one minted from the secret in `dir` with `roles`.
    pub fn token_with(&self, dir: &Path, roles: &[&str]) -> anyhow::Result<String> {
        if let Some(t) = &self.token {
            return Ok(t.clone());
        }
        let issuer = forge_auth::LocalIssuer::load_or_create(
            dir,
            forge_auth::DEFAULT_ISSUER,
            forge_auth::DEFAULT_AUDIENCE,
        )
        .with_context(|| {
            format!(
                "no --token given and cannot mint one from {}",
                dir.display()
            )
        })?;
        let roles: Vec<String> = roles.iter().map(|r| (*r).to_owned()).collect();
        Ok(issuer.mint(
            &self.tenant,
            &roles,
            &self.sub,
            Duration::from_secs(12 * 3600),
        )?)
    }
}

#[derive(Subcommand, Debug)]
pub enum ClientCommand {
    /// Spawn a lab on a track and wait until it runs
    Spawn {
        #[command(flatten)]
        ep: Endpoint,
        track: String,
        #[arg(long)]
        template: Option<String>,
        /// Idempotency key (default: a fresh one)
        #[arg(long)]
        request_id: Option<String>,
        /// Return right after the spawn is accepted
        #[arg(long)]
        no_wait: bool,
        #[arg(long)]
        json: bool,
    },
    /// Show a scenario's status
    Status {
        #[command(flatten)]
        ep: Endpoint,
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Show a scenario's signed score
    Score {
        #[command(flatten)]
        ep: Endpoint,
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Evaluate the lab's objectives now, without ending it
    Check {
        #[command(flatten)]
        ep: Endpoint,
        id: String,
    },
    /// Submit the lab for scoring
    Submit {
        #[command(flatten)]
        ep: Endpoint,
        id: String,
    },
    /// Run a command in the lab: one argument is a shell command (`forge exec ID 'ip route;
    /// ip addr'`), several are a program and its arguments, run without a shell and with their
    /// quoting kept (`forge exec ID -- sh -c 'a; b'`)
    Exec {
        #[command(flatten)]
        ep: Endpoint,
        id: String,
        /// Another container than the learner's (instructors)
        #[arg(long)]
        container: Option<String>,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        command: Vec<String>,
    },
    /// Open an interactive console in the lab: the learner container, or CONTAINER (learners:
    /// the consoles the template declares; instructors: any container)
    Shell {
        #[command(flatten)]
        ep: Endpoint,
        id: String,
        /// The container to open a console in [default: the learner container]
        container: Option<String>,
        /// `rw` to type, `ro` to watch without typing (an instructor's drop-in)
        #[arg(long, value_parser = ["rw", "ro"])]
        mode: Option<String>,
    },
    /// Show the warm pools: size, labs ready per host, hits and misses (operators)
    Pools {
        #[command(flatten)]
        ep: Endpoint,
        #[arg(long)]
        json: bool,
    },
}

impl ClientCommand {
    fn endpoint(&self) -> &Endpoint {
        match self {
            Self::Spawn { ep, .. }
            | Self::Status { ep, .. }
            | Self::Score { ep, .. }
            | Self::Check { ep, .. }
            | Self::Submit { ep, .. }
            | Self::Exec { ep, .. }
            | Self::Shell { ep, .. }
            | Self::Pools { ep, .. } => ep,
        }
    }
}

impl Endpoint {
    /// `http://host:port/path` of `service`, or its configured URL + `path`.
    pub fn url(&self, service: Service, path: &str) -> String {
        let configured = match service {
            Service::Spawn => &self.spawn_url,
            Service::Orchestrator => &self.orchestrator_url,
            Service::Worker => &self.worker_url,
            Service::Scoreboard => &self.scoreboard_url,
            _ => &None,
        };
        match configured {
            Some(base) => format!("{}{path}", base.trim_end_matches('/')),
            None => format!("http://{}:{}{path}", self.host, service.default_port()),
        }
    }
}

/// Requests with the caller's token; a status other than the expected one becomes an error
/// carrying the API's own message.
struct Api<'a> {
    http: reqwest::Client,
    auth: String,
    ep: &'a Endpoint,
}

impl Api<'_> {
    async fn send(&self, req: reqwest::RequestBuilder, ok: u16) -> anyhow::Result<Value> {
        let resp = req
            .header("authorization", &self.auth)
            .send()
            .await
            .context("cannot reach the platform; is `forge up` running?")?;
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if status == ok || (ok == 201 && status == 200) {
            return Ok(body);
        }
        let msg = body
            .pointer("/error/message")
            .and_then(Value::as_str)
            .unwrap_or("unexpected response");
        let details = body
            .pointer("/error/details")
            .filter(|d| !d.is_null())
            .map(|d| format!(" ({d})"))
            .unwrap_or_default();
        Err(anyhow::anyhow!("{status}: {msg}{details}"))
    }

    async fn get(&self, service: Service, path: &str) -> anyhow::Result<Value> {
        self.send(self.http.get(self.ep.url(service, path)), 200)
            .await
    }

    /// GETs `path` for a command with `--json`: when `json` is set the body is printed as it
    /// came and `None` returned, so the caller only renders the human form.
    async fn get_or_print(
        &self,
        service: Service,
        path: &str,
        json: bool,
    ) -> anyhow::Result<Option<Value>> {
        let body = self.get(service, path).await?;
        if json {
            print_json(&body)?;
            return Ok(None);
        }
        Ok(Some(body))
    }

    async fn post(
        &self,
        service: Service,
        path: &str,
        body: Option<&Value>,
        ok: u16,
    ) -> anyhow::Result<Value> {
        let mut req = self.http.post(self.ep.url(service, path));
        if let Some(b) = body {
            req = req.json(b);
        }
        self.send(req, ok).await
    }
}

/// `--json` output: the value pretty-printed on stdout.
fn print_json(value: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

pub async fn run(data_dir: &Path, cmd: ClientCommand) -> anyhow::Result<u8> {
    let ep = cmd.endpoint().clone();
    let token = match cmd {
        ClientCommand::Pools { .. } => ep.caller.token_with(data_dir, &[roles::OBSERVER])?,
        _ => ep.caller.token(data_dir)?,
    };
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()?;
    let api = Api {
        http,
        auth: format!("Bearer {token}"),
        ep: &ep,
    };
    match cmd {
        ClientCommand::Spawn {
            track,
            template,
            request_id,
            no_wait,
            json,
            ..
        } => {
            let rid = request_id.unwrap_or_else(|| format!("cli-{}", uuid::Uuid::new_v4()));
            let mut body = json!({ "track": track, "request_id": rid });
            if let Some(t) = template {
                body["template"] = json!(t);
            }
            let started = Instant::now();
            // The front door holds the answer until the lab runs (a warm lab: at once).
            let path = if no_wait {
                "/v1/spawn"
            } else {
                "/v1/spawn?wait=30s"
            };
            let resp = api.post(Service::Spawn, path, Some(&body), 201).await?;
            let id = resp["scenario_id"].as_str().unwrap_or_default().to_owned();
            if !json {
                println!("scenario {id} accepted");
                println!(
                    "access   {}#token={token}",
                    resp["access_url"].as_str().unwrap_or_default()
                );
                println!(
                    "expires  {}",
                    resp["expires_at"].as_str().unwrap_or_default()
                );
            }
            if no_wait {
                if json {
                    print_json(&resp)?;
                }
                return Ok(0);
            }
            let state = wait_running(&api, &id, started, !json).await?;
            if json {
                print_json(&json!({ "spawn": resp, "scenario": state }))?;
            }
            Ok(if state["status"] == "running" { 0 } else { 1 })
        }
        ClientCommand::Status { id, json, .. } => {
            let path = format!("/v1/scenarios/{id}");
            let Some(s) = api.get_or_print(Service::Orchestrator, &path, json).await? else {
                return Ok(0);
            };
            let fields = [
                "scenario_id",
                "status",
                "template",
                "track",
                "network_id",
                "created_at",
                "started_at",
                "expires_at",
                "ended_at",
                "error",
            ];
            for k in fields {
                if let Some(v) = s.get(k).filter(|v| !v.is_null()) {
                    println!(
                        "{k:<12} {}",
                        v.as_str()
                            .map(str::to_owned)
                            .unwrap_or_else(|| v.to_string())
                    );
                }
            }
            let names: Vec<&str> = s["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            println!("{:<12} {}", "containers", names.join(", "));
            Ok(0)
        }
        ClientCommand::Score { id, json, .. } => {
            let path = format!("/v1/scores/{id}");
            let Some(s) = api.get_or_print(Service::Scoreboard, &path, json).await? else {
                return Ok(0);
            };
            let score = &s["score"];
            let value = score["value"].as_f64().unwrap_or(0.0);
            println!(
                "score    {value:.2} ({} of {} criteria)",
                score["passed"], score["total"]
            );
            super::report::print_criteria(&s["criteria"], "message");
            let from_url = ep.url(Service::Scoreboard, &format!("/v1/scores/{id}"));
            for line in
                super::report::bundle_lines(s["evidence_url"].as_str().unwrap_or(""), &from_url)
            {
                println!("{line}");
            }
            Ok(0)
        }
        ClientCommand::Check { id, .. } => {
            let r = api
                .post(
                    Service::Worker,
                    &format!("/v1/scenarios/{id}/check"),
                    None,
                    200,
                )
                .await?;
            let score = r["score"].as_f64().unwrap_or(0.0);
            println!(
                "{} of {} objectives met (score {score:.2})",
                r["passed"], r["total"]
            );
            super::report::print_criteria(&r["criteria"], "description");
            Ok(if r["passed"] == r["total"] { 0 } else { 1 })
        }
        ClientCommand::Submit { id, .. } => {
            api.post(
                Service::Worker,
                &format!("/v1/scenarios/{id}/submit"),
                None,
                202,
            )
            .await?;
            println!("submitted {id}; `forge score {id}` once it is scored");
            Ok(0)
        }
        ClientCommand::Exec {
            id,
            command,
            container,
            ..
        } => {
            // One argument is a shell command as typed; several are argv, sent as such so the
            // lab runs exactly them (joining them with spaces loses their quoting).
            let mut body = match command.as_slice() {
                [one] => json!({ "command": one }),
                argv => json!({ "argv": argv }),
            };
            if let Some(c) = container {
                body["container"] = json!(c);
            }
            let r = api
                .post(
                    Service::Worker,
                    &format!("/v1/scenarios/{id}/exec"),
                    Some(&body),
                    200,
                )
                .await?;
            print!("{}", r["stdout"].as_str().unwrap_or(""));
            eprint!("{}", r["stderr"].as_str().unwrap_or(""));
            Ok(u8::try_from(r["exit_code"].as_i64().unwrap_or(1).clamp(0, 255)).unwrap_or(1))
        }
        ClientCommand::Shell {
            id,
            container,
            mode,
            ..
        } => {
            let console = super::shell::Console {
                container: container.as_deref(),
                mode: mode.as_deref(),
            };
            super::shell::run(&ep, &token, &id, console).await
        }
        ClientCommand::Pools { json, .. } => {
            let Some(p) = api
                .get_or_print(Service::Orchestrator, "/v1/pools", json)
                .await?
            else {
                return Ok(0);
            };
            println!(
                "{:<32} {:>4} {:>5} {:>6} {:>6}  by host",
                "template", "size", "ready", "hits", "misses"
            );
            for v in p["pools"].as_array().into_iter().flatten() {
                let hosts: Vec<String> = v["ready_by_host"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(h, n)| format!("{h}={n}"))
                    .collect();
                println!(
                    "{:<32} {:>4} {:>5} {:>6} {:>6}  {}",
                    v["template"].as_str().unwrap_or(""),
                    v["size"],
                    v["ready"],
                    v["hits"],
                    v["misses"],
                    hosts.join(" ")
                );
            }
            Ok(0)
        }
    }
}

/// Polls the scenario until it leaves `pending`/`creating`, showing progress.
async fn wait_running(
    api: &Api<'_>,
    id: &str,
    started: Instant,
    show: bool,
) -> anyhow::Result<Value> {
    let tty = std::io::stderr().is_terminal();
    let spinner = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
    let mut last = String::new();
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut i = 0usize;
    loop {
        let s = api
            .get(Service::Orchestrator, &format!("/v1/scenarios/{id}"))
            .await?;
        let status = s["status"].as_str().unwrap_or("").to_owned();
        let secs = started.elapsed().as_secs_f64();
        if show && status != last {
            if tty {
                eprint!("\r\x1b[K");
            }
            eprintln!("  {secs:6.2}s  {status}");
            last = status.clone();
        } else if show && tty {
            eprint!("\r  {} {secs:6.2}s", spinner[i % spinner.len()]);
            let _ = std::io::stderr().flush();
        }
        match status.as_str() {
            "pending" | "creating" => {}
            "running" => {
                if show {
                    println!(
                        "lab is running after {secs:.2}s; `forge shell {id}` opens a terminal"
                    );
                }
                return Ok(s);
            }
            other => {
                let err = s["error"].as_str().unwrap_or("");
                if show {
                    println!("lab ended as {other}: {err}");
                }
                return Ok(s);
            }
        }
        if Instant::now() > deadline {
            bail!("scenario {id} did not start within 5 minutes");
        }
        i += 1;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}
