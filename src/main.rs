//! The `gatehouse` command line.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use gatehouse::config::Config;

// A proxy allocates and frees small buffers for every request; mimalloc does that with
// less contention and fewer cycles than the system allocator (see gatehouse-alloc for why
// not through the `mimalloc` crate).
#[global_allocator]
static GLOBAL: gatehouse_alloc::MiMalloc = gatehouse_alloc::MiMalloc;
use gatehouse::server::RunOptions;

#[derive(Parser)]
#[command(
    name = "gatehouse",
    version,
    about = "Authentication and authorization reverse proxy"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Run {
        /// The config file.
        #[arg(short, long, default_value = "gateway.toml")]
        config: PathBuf,
        /// Take over the listening sockets of a running instance (graceful binary upgrade).
        #[arg(long)]
        upgrade: bool,
        /// The socket the old and new instance hand listeners over on.
        #[arg(long, default_value = "/tmp/gatehouse_upgrade.sock")]
        upgrade_sock: String,
    },
    /// Validate the config; print `file:line:col: message` for each problem.
    Check {
        /// The config file.
        #[arg(short, long, default_value = "gateway.toml")]
        config: PathBuf,
    },
    /// Config tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// A local trial on loopback: the gateway in front of a built-in demo upstream.
    Demo {
        /// The config file.
        #[arg(short, long, default_value = "gateway.toml")]
        config: PathBuf,
    },
    /// Authorization policy tools.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Bearer token tools.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// API key tools.
    Apikey {
        #[command(subcommand)]
        command: ApikeyCommand,
    },
    /// See and end browser sessions through a running gateway's admin listener (needs
    /// `[admin] token_file`).
    Sessions {
        #[command(subcommand)]
        command: SessionsCommand,
    },
    /// Print a shell completion script, e.g. `gatehouse completions bash >
    /// /etc/bash_completion.d/gatehouse`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), e.g. `gatehouse man > /usr/share/man/man1/gatehouse.1`.
    Man,
}

/// Where the admin API is, and the token it takes.
#[derive(clap::Args)]
struct AdminAccess {
    /// The admin listener's URL.
    #[arg(
        long = "admin",
        value_name = "URL",
        default_value = "http://127.0.0.1:9090"
    )]
    url: String,
    /// A file holding the admin token (`[admin] token_file` of the gateway).
    #[arg(long, value_name = "FILE")]
    token_file: PathBuf,
}

/// An issuer's subject: whose sessions.
#[derive(clap::Args)]
struct Person {
    /// The issuer that vouched for the subject; may be left out when the gateway has one.
    #[arg(long)]
    issuer: Option<String>,
    /// The subject (`sub`) at that issuer.
    #[arg(long)]
    subject: Option<String>,
}

#[derive(Subcommand)]
enum SessionsCommand {
    /// List a person's sessions: id hash, IdP, created, last seen, client IP and user agent at
    /// login.
    List {
        #[command(flatten)]
        admin: AdminAccess,
        #[command(flatten)]
        person: Person,
        /// Print the API's JSON rather than a table.
        #[arg(long)]
        json: bool,
    },
    /// End one session (`--id-hash`, as `list` shows it) or all of a person's (`--all`).
    #[command(group(clap::ArgGroup::new("which").required(true).args(["id_hash", "all"])))]
    Revoke {
        #[command(flatten)]
        admin: AdminAccess,
        #[command(flatten)]
        person: Person,
        /// The session's id hash.
        #[arg(long, value_name = "HASH")]
        id_hash: Option<String>,
        /// Every session of the person named by `--issuer` and `--subject`.
        #[arg(long, requires = "subject")]
        all: bool,
    },
    /// Count the sessions in the store, or a person's.
    Count {
        #[command(flatten)]
        admin: AdminAccess,
        #[command(flatten)]
        person: Person,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the effective config as JSON, offline: defaults filled in, secrets redacted (the
    /// document the admin listener serves at `/config`).
    Show {
        /// The config file.
        #[arg(short, long, default_value = "gateway.toml")]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Run the [[test]] cases of every policy the config uses; exit 1 on any failure.
    Test {
        /// The config file.
        #[arg(short, long, default_value = "gateway.toml")]
        config: PathBuf,
    },
    /// Print the decision for one request, the rule that made it, and why earlier rules
    /// did not match.
    Explain {
        /// The config file.
        #[arg(short, long, default_value = "gateway.toml")]
        config: PathBuf,
        /// The route (by name) whose policy decides.
        #[arg(long)]
        route: String,
        /// The request's method.
        #[arg(long, default_value = "GET")]
        method: String,
        /// The request's path (with its query, if any), normalized as the gateway would.
        #[arg(long)]
        path: String,
        /// The identity's claims as JSON (sub, email, groups, ...); omit for anonymous.
        #[arg(long)]
        claims: Option<String>,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Validate a token against the configured issuers and say why it is accepted or refused.
    Inspect {
        /// The token (a JWT).
        token: String,
        /// The config file.
        #[arg(short, long, default_value = "gateway.toml")]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum ApikeyCommand {
    /// Read a key on stdin, print the `hash` to put in `[[api_key]]`.
    Hash,
    /// Print a new random key and its hash.
    Generate,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => match Config::load(&config) {
            Ok(loaded) => {
                for warning in loaded.warnings() {
                    eprintln!("{warning}");
                }
                println!("{}: ok", config.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::Run {
            config,
            upgrade,
            upgrade_sock,
        } => {
            let loaded = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    eprintln!("gatehouse: refusing to start with an invalid config");
                    return ExitCode::FAILURE;
                }
            };
            if loaded.dev_idp.is_some() {
                eprintln!(
                    "{}: [dev_idp] logs anyone in and runs only under `gatehouse demo`; remove it to run this config",
                    config.display()
                );
                return ExitCode::FAILURE;
            }
            gatehouse::telemetry::init(&loaded.log);
            let options = RunOptions {
                upgrade,
                upgrade_sock,
            };
            report(gatehouse::server::run(loaded, &config, options, Vec::new()))
        }
        Command::Config {
            command: ConfigCommand::Show { config },
        } => match Config::load(&config) {
            Ok(loaded) => {
                for warning in loaded.warnings() {
                    eprintln!("{warning}");
                }
                match serde_json::to_string_pretty(&loaded.redacted_json()) {
                    Ok(shown) => {
                        println!("{shown}");
                        ExitCode::SUCCESS
                    }
                    Err(e) => report(Err(e.to_string())),
                }
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::Demo { config } => report(gatehouse::demo::run(&config)),
        Command::Policy { command } => match policy_command(command) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(e) => report(Err(e)),
        },
        Command::Token {
            command: TokenCommand::Inspect { token, config },
        } => {
            let loaded = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::FAILURE;
                }
            };
            match gatehouse::inspect::inspect(&loaded, &token) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::FAILURE,
                Err(e) => report(Err(e)),
            }
        }
        Command::Apikey {
            command: ApikeyCommand::Hash,
        } => {
            let mut key = String::new();
            if let Err(e) = std::io::stdin().read_line(&mut key) {
                return report(Err(format!("cannot read the key from stdin: {e}")));
            }
            let key = key.trim_end_matches(['\r', '\n']);
            if key.is_empty() {
                return report(Err("no key on stdin".into()));
            }
            println!("{}", gatehouse::authn::api_key::hash_key(key));
            ExitCode::SUCCESS
        }
        Command::Sessions { command } => report(sessions_command(command)),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "gatehouse",
                &mut std::io::stdout(),
            );
            ExitCode::SUCCESS
        }
        Command::Man => {
            print!("{}", man_page(Cli::command()));
            ExitCode::SUCCESS
        }
        Command::Apikey {
            command: ApikeyCommand::Generate,
        } => {
            let bytes: [u8; 32] = rand::random();
            let key = format!("gh_{}", hex::encode(bytes));
            println!("key:  {key}");
            println!("hash: {}", gatehouse::authn::api_key::hash_key(&key));
            ExitCode::SUCCESS
        }
    }
}

/// Text for a roff line: backslashes escaped, and a leading `.` or `'` kept from being read as
/// a request.
fn roff(text: &str) -> String {
    let escaped = text.replace('\\', "\\e").replace('-', "\\-");
    if escaped.starts_with(['.', '\'']) {
        format!("\\&{escaped}")
    } else {
        escaped
    }
}

/// Help text on one line, ending with a full stop.
fn sentence(text: &str) -> String {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.ends_with(['.', ')']) || line.is_empty() {
        true => line,
        false => format!("{line}."),
    }
}

/// One man page for the whole command line, built from its clap definition: every command
/// and subcommand with its synopsis, description and options.
fn man_page(mut cli: clap::Command) -> String {
    cli.build();
    let mut page = format!(
        ".TH GATEHOUSE 1 \"\" \"gatehouse {}\" \"User Commands\"\n.SH NAME\ngatehouse \\- {}\n.SH SYNOPSIS\n.B gatehouse\n\\fICOMMAND\\fR [\\fIOPTIONS\\fR]\n.SH DESCRIPTION\n{}\n.SH COMMANDS\n",
        env!("CARGO_PKG_VERSION"),
        roff(&cli.get_about().map(|a| a.to_string()).unwrap_or_default()),
        roff("An authentication and authorization reverse proxy: it validates bearer tokens, API keys and browser sessions (OpenID Connect login), applies per-route policies and rate limits, and passes the identity to the upstream in headers. Every command reads the config file given with -c (default gateway.toml)."),
    );
    /// `--long VALUE` in bold and italics, for the synopsis and the option list.
    fn written(arg: &clap::Arg) -> Option<String> {
        let id = arg.get_id().as_str();
        let value = arg
            .get_value_names()
            .and_then(|v| v.first())
            .map_or_else(|| id.to_ascii_uppercase(), |v| v.to_string());
        let value = format!("\\fI{}\\fR", roff(&value));
        if arg.is_positional() {
            return Some(value);
        }
        let flag = format!("\\fB\\-\\-{}\\fR", roff(arg.get_long()?));
        Some(match arg.get_action().takes_values() {
            true => format!("{flag} {value}"),
            false => flag,
        })
    }
    fn commands(cmd: &clap::Command, page: &mut String) {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            if sub.get_name() == "help" {
                continue;
            }
            let args: Vec<&clap::Arg> = sub
                .get_arguments()
                .filter(|a| !a.is_hide_set() && !matches!(a.get_id().as_str(), "help" | "version"))
                .collect();
            let mut synopsis = roff(sub.get_bin_name().unwrap_or(sub.get_name()));
            for arg in &args {
                let Some(written) = written(arg) else {
                    continue;
                };
                if arg.is_required_set() || arg.is_positional() {
                    synopsis.push_str(&format!(" {written}"));
                } else {
                    synopsis.push_str(&format!(" [{written}]"));
                }
            }
            if sub.has_subcommands() {
                synopsis.push_str(" \\fICOMMAND\\fR");
            }
            page.push_str(&format!(".SS \"{synopsis}\"\n"));
            if let Some(about) = sub.get_long_about().or(sub.get_about()) {
                page.push_str(&roff(&sentence(&about.to_string())));
                page.push('\n');
            }
            for arg in &args {
                let mut header = Vec::new();
                if let Some(short) = arg.get_short() {
                    header.push(format!("\\fB\\-{short}\\fR"));
                }
                header.extend(written(arg));
                let mut help = sentence(&arg.get_help().map(|h| h.to_string()).unwrap_or_default());
                let possible: Vec<String> = arg
                    .get_possible_values()
                    .iter()
                    .map(|v| v.get_name().to_string())
                    .collect();
                if !possible.is_empty() {
                    help.push_str(&format!(" One of: {}.", possible.join(", ")));
                }
                let defaults: Vec<String> = arg
                    .get_default_values()
                    .iter()
                    .map(|v| v.to_string_lossy().into_owned())
                    .filter(|v| v != "false")
                    .collect();
                if !defaults.is_empty() {
                    help.push_str(&format!(" Default: {}.", defaults.join(" ")));
                }
                page.push_str(&format!(
                    ".TP\n{}\n{}\n",
                    header.join(", "),
                    roff(help.trim())
                ));
            }
            commands(sub, page);
        }
    }
    commands(&cli, &mut page);
    page.push_str(&format!(
        ".SH SIGNALS\n.TP\n.B SIGHUP\n{}\n.TP\n.B SIGTERM\n{}\n.TP\n.B SIGQUIT\n{}\n.SH ENVIRONMENT\n.TP\n.B RUST_LOG\n{}\n.SH SEE ALSO\n{}\n",
        roff("Re-read and validate the config; a valid one replaces the running config, an invalid one is logged with file:line:col and the old one stays."),
        roff("Stop accepting connections, let requests in flight finish (at most server.shutdown_timeout), exit."),
        roff("Hand the listening sockets to a new process started with run --upgrade, then drain."),
        roff("A log filter that overrides log.level."),
        roff("docs/configuration.md (every config key), README.md (the config walkthrough and operations)."),
    ));
    page
}

/// `gatehouse sessions list|revoke|count`: one call to the admin API, its answer printed.
fn sessions_command(command: SessionsCommand) -> Result<(), String> {
    let (admin, person, method, path) = match &command {
        SessionsCommand::List { admin, person, .. } => {
            (admin, person, "GET", "/sessions".to_string())
        }
        SessionsCommand::Revoke {
            admin,
            person,
            id_hash: Some(hash),
            ..
        } => (admin, person, "DELETE", format!("/sessions/{hash}")),
        SessionsCommand::Revoke { admin, person, .. } => {
            (admin, person, "DELETE", "/sessions".to_string())
        }
        SessionsCommand::Count { admin, person } => {
            (admin, person, "GET", "/sessions/count".to_string())
        }
    };
    let token = std::fs::read_to_string(&admin.token_file).map_err(|e| {
        format!(
            "cannot read --token-file {}: {e}",
            admin.token_file.display()
        )
    })?;
    let token = token.trim_end_matches(['\n', '\r']);
    let mut url = url::Url::parse(&admin.url)
        .map_err(|e| format!("--admin {:?} is not a URL: {e}", admin.url))?;
    url.set_path(&path);
    // A revoke of one session names it by its hash alone.
    if !path.starts_with("/sessions/") || path == "/sessions/count" {
        let mut query = url.query_pairs_mut();
        if let Some(issuer) = &person.issuer {
            query.append_pair("issuer", issuer);
        }
        if let Some(subject) = &person.subject {
            query.append_pair("subject", subject);
        }
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let (status, body) = runtime.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .map_err(|e| e.to_string())?;
        let method = reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?;
        let answer = client
            .request(method, url.clone())
            .bearer_auth(token)
            .send()
            .await
            .map_err(|e| format!("cannot reach the admin listener at {}: {e}", admin.url))?;
        let status = answer.status().as_u16();
        let body: serde_json::Value = answer.json().await.unwrap_or_default();
        Ok::<_, String>((status, body))
    })?;
    if status == 401 {
        return Err("the admin listener refused the token (401): check --token-file against the gateway's [admin] token_file".into());
    }
    if status != 200 {
        let error = body["error"].as_str().unwrap_or("unexpected answer");
        let detail = body["detail"]
            .as_str()
            .map(|d| format!(": {d}"))
            .unwrap_or_default();
        return Err(format!("{status} {error}{detail}"));
    }
    match command {
        SessionsCommand::List { json: true, .. } => {
            println!(
                "{}",
                serde_json::to_string_pretty(&body).unwrap_or_default()
            );
        }
        SessionsCommand::List { .. } => print_sessions(&body),
        SessionsCommand::Revoke { .. } => {
            println!("ended {} session(s)", body["ended"].as_u64().unwrap_or(0));
        }
        SessionsCommand::Count { .. } => println!("{}", body["sessions"].as_u64().unwrap_or(0)),
    }
    Ok(())
}

/// A listing as a table, one session a line, the newest first.
fn print_sessions(body: &serde_json::Value) {
    let time = |v: &serde_json::Value| {
        v.as_i64()
            .and_then(|t| chrono::DateTime::from_timestamp(t, 0))
            .map_or_else(
                || "-".to_string(),
                |t| t.format("%Y-%m-%d %H:%M:%SZ").to_string(),
            )
    };
    let text = |v: &serde_json::Value| v.as_str().unwrap_or("-").to_string();
    let empty = Vec::new();
    let sessions = body["sessions"].as_array().unwrap_or(&empty);
    println!(
        "{} session(s) of {} at {}",
        sessions.len(),
        text(&body["subject"]),
        text(&body["issuer"])
    );
    for s in sessions {
        println!(
            "{}  idp={}  created={}  last_seen={}  ip={}  agent={:?}",
            text(&s["id_hash"]),
            text(&s["idp"]),
            time(&s["created_at"]),
            time(&s["last_seen"]),
            text(&s["client_ip"]),
            s["user_agent"].as_str().unwrap_or("-"),
        );
    }
}

fn report(result: Result<(), String>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gatehouse: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `gatehouse policy test|explain`; Ok(false) when a test fails or a request is denied.
fn policy_command(command: PolicyCommand) -> Result<bool, String> {
    match command {
        PolicyCommand::Test { config } => {
            let config = Config::load(&config).map_err(|e| e.to_string())?;
            let mut seen = std::collections::HashSet::new();
            let (mut passed, mut failed) = (0, 0);
            for route in &config.routes {
                let Some(policy) = &route.policy else {
                    continue;
                };
                if !seen.insert(policy.source.clone()) {
                    continue;
                }
                println!("{}", policy.source.display());
                for outcome in policy.run_tests() {
                    let verdict = if outcome.passed { "pass" } else { "FAIL" };
                    let got = if outcome.decision.allow {
                        "allow"
                    } else {
                        "deny"
                    };
                    println!(
                        "  {verdict}  {} ({got} by {})",
                        outcome.name,
                        outcome.decision.reason()
                    );
                    if outcome.passed {
                        passed += 1;
                    } else {
                        failed += 1;
                    }
                }
            }
            println!("policy tests: {passed} passed, {failed} failed");
            Ok(failed == 0)
        }
        PolicyCommand::Explain {
            config,
            route,
            method,
            path,
            claims,
        } => {
            let config = Config::load(&config).map_err(|e| e.to_string())?;
            let r = config
                .routes
                .iter()
                .find(|r| r.name == route)
                .ok_or_else(|| format!("no route named {route:?}"))?;
            let policy = r
                .policy
                .as_ref()
                .ok_or_else(|| format!("route {route:?} has no policy"))?;
            let identity = match claims {
                Some(json) => match serde_json::from_str::<serde_json::Value>(&json) {
                    Ok(serde_json::Value::Object(map)) => {
                        Some(gatehouse::authz::test_identity(&map))
                    }
                    _ => return Err("--claims must be a JSON object".into()),
                },
                None => None,
            };
            let method = http::Method::from_bytes(method.to_ascii_uppercase().as_bytes())
                .map_err(|_| format!("invalid method {method:?}"))?;
            let normalized =
                gatehouse::normalize::normalize_target(path.as_bytes(), Default::default())
                    .map_err(|e| format!("path {path:?} would be refused with 400: {e}"))?;
            let headers = http::HeaderMap::new();
            let host = r.host.clone().unwrap_or_default();
            let request = gatehouse::authz::PolicyRequest {
                method: &method,
                path: &normalized.path,
                host: &host,
                query: normalized.query.as_deref().unwrap_or(""),
                headers: &headers,
                client_ip: None,
                now: None,
            };
            let (decision, trace) = policy.explain(&request, identity.as_ref());
            println!(
                "policy {} (mode {})",
                policy.source.display(),
                if policy.report_only {
                    "report-only"
                } else {
                    "enforce"
                }
            );
            println!("request {method} {} on route {route}", normalized.path);
            for line in &trace {
                println!("  {line}");
            }
            let verdict = if decision.allow { "allow" } else { "deny" };
            match &decision.rule {
                Some(rule) => println!("decision: {verdict} by rule {rule:?}"),
                None => println!("decision: {verdict} by the policy default (no rule matched)"),
            }
            Ok(decision.allow)
        }
    }
}
