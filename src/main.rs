//! The `gatehouse` command line.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
        #[arg(short, long, default_value = "gateway.toml")]
        config: PathBuf,
    },
    /// A local trial on loopback: the gateway in front of a built-in demo upstream.
    Demo {
        #[arg(short, long, default_value = "gateway.toml")]
        config: PathBuf,
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
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Validate a token against the configured issuers and say why it is accepted or refused.
    Inspect {
        token: String,
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
            Ok(_) => {
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
            gatehouse::telemetry::init(&loaded.log);
            let options = RunOptions {
                upgrade,
                upgrade_sock,
            };
            report(gatehouse::server::run(loaded, &config, options, Vec::new()))
        }
        Command::Demo { config } => report(gatehouse::demo::run(&config)),
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

fn report(result: Result<(), String>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gatehouse: {e}");
            ExitCode::FAILURE
        }
    }
}
