//! The `wharf` command: parses arguments, sets up logging, and calls the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use wharf::config::Config;

#[derive(Parser)]
#[command(
    name = "wharf",
    version,
    about = "Run WebAssembly message handlers against NATS JetStream"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the handlers as a service until SIGINT or SIGTERM.
    Run {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        nats: NatsArgs,
    },
    /// Check the config and that every component implements the handler world, without a server.
    Check {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Start a local nats-server, create the streams the config needs, and run the handlers.
    Dev {
        #[command(flatten)]
        config: ConfigArg,
    },
}

#[derive(Args)]
struct ConfigArg {
    /// The configuration file.
    #[arg(short, long, default_value = "wharf.toml")]
    config: PathBuf,
}

/// Connection options; each overrides the config file's `[nats]` table.
#[derive(Args)]
struct NatsArgs {
    /// Server URL.
    #[arg(long, env = "NATS_URL")]
    url: Option<String>,
    /// Credentials (.creds) file.
    #[arg(long, env = "NATS_CREDS")]
    creds: Option<PathBuf>,
    /// User name (with --password).
    #[arg(long, env = "NATS_USER")]
    user: Option<String>,
    /// Password (with --user).
    #[arg(long, env = "NATS_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// Authentication token.
    #[arg(long, env = "NATS_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// CA certificate to verify the server with (enables TLS).
    #[arg(long, env = "NATS_CA")]
    tls_ca: Option<PathBuf>,
    /// Client certificate (with --tls-key).
    #[arg(long, env = "NATS_CERT")]
    tls_cert: Option<PathBuf>,
    /// Client key (with --tls-cert).
    #[arg(long, env = "NATS_KEY")]
    tls_key: Option<PathBuf>,
}

impl NatsArgs {
    fn apply(self, config: &mut Config) {
        let n = &mut config.nats;
        n.url = self.url.or(n.url.take());
        n.credentials = self.creds.or(n.credentials.take());
        n.user = self.user.or(n.user.take());
        n.password = self.password.or(n.password.take());
        n.token = self.token.or(n.token.take());
        n.tls_ca = self.tls_ca.or(n.tls_ca.take());
        n.tls_cert = self.tls_cert.or(n.tls_cert.take());
        n.tls_key = self.tls_key.or(n.tls_key.take());
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WHARF_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Check { config } => {
            let config = Config::load(&config.config)?;
            wharf::check(&config)?;
            println!(
                "{}: ok ({} handler{})",
                config.path.display(),
                config.handlers.len(),
                if config.handlers.len() == 1 { "" } else { "s" }
            );
            Ok(())
        }
        Command::Run { config, nats } => {
            let mut config = Config::load(&config.config)?;
            nats.apply(&mut config);
            runtime()?.block_on(wharf::run(config, shutdown_then_force()))
        }
        Command::Dev { config } => {
            let config = Config::load(&config.config)?;
            runtime()?.block_on(wharf::dev::run(config, shutdown_then_force()))
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Resolves on the first signal; a second signal exits at once. That is
/// still safe: whatever was not acked is redelivered.
async fn shutdown_then_force() {
    wharf::shutdown_signal().await;
    tokio::spawn(async {
        wharf::shutdown_signal().await;
        eprintln!("second signal: exiting now; unacked messages will be redelivered");
        std::process::exit(130);
    });
}
