//! The `gatehouse` command line.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use gatehouse::config::Config;
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
