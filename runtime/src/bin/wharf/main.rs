//! The `wharf` command: parses arguments, sets up logging, and calls the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use wharf::config::{Config, Connection};
use wharf::dlq::Selector;

#[derive(Parser)]
#[command(
    name = "wharf",
    version = concat!(
        env!("CARGO_PKG_VERSION"),
        " (handler world wharf:handler/handler@0.1.0, wasmtime 48)"
    ),
    about = "Run WebAssembly message handlers against NATS JetStream"
)]
struct Cli {
    /// Log format: `text` for people, `json` (one object per line) for log shippers.
    #[arg(long, global = true, env = "WHARF_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

/// The operator's HTTP listener, and reloads.
#[derive(Args)]
struct MetricsArg {
    /// Also reload when the config file or a component file changes (SIGHUP always reloads).
    #[arg(long)]
    watch: bool,
    /// Serve /metrics, /healthz and /readyz here (overrides `[runtime] metrics_addr`).
    #[arg(long, env = "WHARF_METRICS_ADDR", value_name = "ADDR", value_parser = wharf::config::parse_addr)]
    metrics_addr: Option<std::net::SocketAddr>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the handlers as a service until SIGINT or SIGTERM.
    Run {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        nats: Connection,
        #[command(flatten)]
        metrics: MetricsArg,
    },
    /// Check the config and that every component implements the handler world, without a server.
    Check {
        #[command(flatten)]
        config: ConfigArg,
        /// Also check, on this server, that every stream exists and every
        /// dead-letter and publish subject is stored by a stream.
        #[arg(long, value_name = "URL")]
        server: Option<String>,
    },
    /// Start a local nats-server, create the streams the config needs, and run the handlers.
    Dev {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        metrics: MetricsArg,
    },
    /// Inspect, replay or purge dead-letter messages.
    Dlq {
        /// The configuration file; the handler's `dead_letter` subject locates the copies.
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// The handler whose dead-letters to use (needed when the config has several).
        #[arg(long)]
        handler: Option<String>,
        /// Use this dead-letter stream directly instead of a config.
        #[arg(long, conflicts_with_all = ["config", "handler"])]
        stream: Option<String>,
        #[command(flatten)]
        nats: Connection,
        #[command(subcommand)]
        action: DlqAction,
    },
}

#[derive(Subcommand)]
enum DlqAction {
    /// One line per dead-letter message: sequence, source subject, kind, deliveries, time, reason.
    List,
    /// Every header and a payload preview of one message.
    Show {
        /// The message's sequence in the dead-letter stream.
        seq: u64,
    },
    /// Republish messages to their original subject with a new Nats-Msg-Id.
    Replay {
        /// `all`, a sequence (7), a range (3-9) or a list (1,4,10-12).
        selector: String,
        /// Delete each dead-letter message once its replay is confirmed.
        #[arg(long)]
        remove: bool,
    },
    /// Delete messages from the dead-letter stream.
    Purge {
        /// `all`, a sequence (7), a range (3-9) or a list (1,4,10-12).
        selector: String,
    },
}

#[derive(Args)]
struct ConfigArg {
    /// The configuration file.
    #[arg(short, long, default_value = "wharf.toml")]
    config: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("WHARF_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,async_nats=warn"));
    // Colours only on a terminal: a service's log (journald, a file, a
    // collector) gets plain text.
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if cli.log_format == "json" {
        logs.json().with_current_span(true).init();
    } else {
        logs.init();
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Check { config, server } => {
            let mut config = Config::load(&config.config)?;
            match server {
                None => runtime.block_on(wharf::check(&config))?,
                Some(url) => {
                    config.nats.url = Some(url);
                    runtime.block_on(wharf::check_with_server(&config))?;
                }
            }
            println!(
                "{}: ok ({} handler{})",
                config.path.display(),
                config.handlers.len(),
                if config.handlers.len() == 1 { "" } else { "s" }
            );
            Ok(())
        }
        Command::Run {
            config,
            nats,
            metrics,
        } => {
            let mut config = Config::load(&config.config)?;
            config.nats = config.nats.overlaid(nats);
            if metrics.metrics_addr.is_some() {
                config.runtime.metrics_addr = metrics.metrics_addr;
            }
            config.runtime.watch |= metrics.watch;
            runtime.block_on(async {
                let shutdown = wharf::Signals::new()?.first_then_force();
                wharf::run(config, shutdown).await
            })
        }
        Command::Dev { config, metrics } => {
            let mut config = Config::load(&config.config)?;
            if metrics.metrics_addr.is_some() {
                config.runtime.metrics_addr = metrics.metrics_addr;
            }
            config.runtime.watch |= metrics.watch;
            runtime.block_on(async {
                let shutdown = wharf::Signals::new()?.first_then_force();
                wharf::dev::run(config, shutdown).await
            })
        }
        Command::Dlq {
            config,
            handler,
            stream,
            nats,
            action,
        } => runtime.block_on(dlq(config, handler, stream, nats, action)),
    }
}

async fn dlq(
    config: Option<PathBuf>,
    handler: Option<String>,
    stream: Option<String>,
    nats: Connection,
    action: DlqAction,
) -> anyhow::Result<()> {
    // Parse the selector before touching the server, so a typo changes nothing.
    let selector = match &action {
        DlqAction::Replay { selector, .. } | DlqAction::Purge { selector } => {
            Some(Selector::parse(selector)?)
        }
        _ => None,
    };
    let target = match stream {
        Some(stream) => wharf::dlq::Target::Stream(stream),
        None => {
            let path = config.unwrap_or_else(|| PathBuf::from("wharf.toml"));
            wharf::dlq::Target::Config(Box::new(Config::load(&path)?), handler)
        }
    };
    let dlq = wharf::dlq::Dlq::open(target, nats).await?;
    match action {
        DlqAction::List => dlq.list(&mut std::io::stdout()).await?,
        DlqAction::Show { seq } => print!("{}", dlq.show(seq).await?),
        DlqAction::Replay { remove, .. } => {
            let n = dlq
                .replay(selector.as_ref().expect("parsed above"), remove)
                .await?;
            println!(
                "replayed {n} message(s){}",
                if remove { " and removed them" } else { "" }
            );
        }
        DlqAction::Purge { .. } => {
            let n = dlq.purge(selector.as_ref().expect("parsed above")).await?;
            println!("deleted {n} message(s)");
        }
    }
    Ok(())
}
