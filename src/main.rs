//! The `gatehouse` command line.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use gatehouse::config::Config;

// A proxy allocates and frees small buffers for every request; mimalloc does that with
// less contention and fewer cycles than the system allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
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
    /// Print a shell completion script, e.g. `gatehouse completions bash >
    /// /etc/bash_completion.d/gatehouse`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), e.g. `gatehouse man > /usr/share/man/man1/gatehouse.1`.
    Man,
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
