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
        /// Also check, on this server, that every stream exists and every
        /// dead-letter and publish subject is stored by a stream.
        #[arg(long, value_name = "URL")]
        server: Option<String>,
    },
    /// Start a local nats-server, create the streams the config needs, and run the handlers.
    Dev {
        #[command(flatten)]
        config: ConfigArg,
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
        nats: NatsArgs,
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
    fn apply(self, n: &mut wharf::config::NatsConfig) {
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
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,async_nats=warn")),
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
        Command::Check { config, server } => {
            let mut config = Config::load(&config.config)?;
            match server {
                None => wharf::check(&config)?,
                Some(url) => {
                    config.nats.url = Some(url);
                    runtime()?.block_on(wharf::check_with_server(&config))?;
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
        Command::Run { config, nats } => {
            let mut config = Config::load(&config.config)?;
            nats.apply(&mut config.nats);
            runtime()?.block_on(async { wharf::run(config, shutdown_then_force()?).await })
        }
        Command::Dev { config } => {
            let config = Config::load(&config.config)?;
            runtime()?.block_on(async { wharf::dev::run(config, shutdown_then_force()?).await })
        }
        Command::Dlq {
            config,
            handler,
            stream,
            nats,
            action,
        } => runtime()?.block_on(dlq(config, handler, stream, nats, action)),
    }
}

async fn dlq(
    config: Option<PathBuf>,
    handler: Option<String>,
    stream: Option<String>,
    nats: NatsArgs,
    action: DlqAction,
) -> anyhow::Result<()> {
    use wharf::dlq::{Location, Selector};

    // Parse the selector before touching the server, so a typo changes nothing.
    let selector = match &action {
        DlqAction::Replay { selector, .. } | DlqAction::Purge { selector } => {
            Some(Selector::parse(selector)?)
        }
        _ => None,
    };
    // Either a dead-letter stream named outright, or a config whose handler names the subject.
    enum Source {
        Stream(String),
        Config(Box<Config>),
    }
    let source = match stream {
        Some(stream) => Source::Stream(stream),
        None => Source::Config(Box::new(Config::load(
            config
                .as_deref()
                .unwrap_or(std::path::Path::new("wharf.toml")),
        )?)),
    };
    let mut connection = match &source {
        Source::Config(c) => c.nats.clone(),
        Source::Stream(_) => wharf::config::NatsConfig::default(),
    };
    nats.apply(&mut connection);
    let client = wharf::connect::connect(&connection, "wharf-dlq").await?;
    let js = async_nats::jetstream::new(client);
    let location = match source {
        Source::Stream(stream) => Location {
            stream,
            subject: None,
        },
        Source::Config(settings) => {
            let with_dlq: Vec<_> = settings
                .handlers
                .iter()
                .filter(|h| h.dead_letter.is_some())
                .collect();
            let h = match &handler {
                Some(name) => settings.handler(name).ok_or_else(|| {
                    anyhow::anyhow!(
                        "config {}: no handler named \"{name}\"",
                        settings.path.display()
                    )
                })?,
                None if with_dlq.len() == 1 => with_dlq[0],
                None => anyhow::bail!(
                    "config {}: {} handlers have dead-letter subjects; pick one with --handler",
                    settings.path.display(),
                    with_dlq.len()
                ),
            };
            let subject = h.dead_letter.clone().ok_or_else(|| {
                anyhow::anyhow!("handler \"{}\" has no dead_letter subject", h.name)
            })?;
            let stream = js.stream_by_subject(subject.clone()).await.map_err(|_| {
                anyhow::anyhow!("no stream stores dead-letter subject \"{subject}\"")
            })?;
            Location {
                stream,
                subject: Some(subject),
            }
        }
    };
    match action {
        DlqAction::List => print!(
            "{}",
            wharf::dlq::format_list(&wharf::dlq::read(&js, &location).await?)
        ),
        DlqAction::Show { seq } => {
            let entries =
                wharf::dlq::select(&js, &location, &Selector::Sequences([seq].into())).await?;
            print!("{}", wharf::dlq::format_show(&entries[0]));
        }
        DlqAction::Replay { remove, .. } => {
            let n = wharf::dlq::replay(
                &js,
                &location,
                selector.as_ref().expect("parsed above"),
                remove,
            )
            .await?;
            println!(
                "replayed {n} message(s){}",
                if remove { " and removed them" } else { "" }
            );
        }
        DlqAction::Purge { .. } => {
            let n =
                wharf::dlq::purge(&js, &location, selector.as_ref().expect("parsed above")).await?;
            println!("deleted {n} message(s)");
        }
    }
    Ok(())
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Resolves on the first signal; a second signal exits at once. That is
/// still safe: whatever was not acked is redelivered. Both are listened for
/// from start-up on, so a quick second signal is not lost.
fn shutdown_then_force() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    let mut signals = wharf::Signals::new()?;
    Ok(async move {
        signals.recv().await;
        tokio::spawn(async move {
            signals.recv().await;
            eprintln!("second signal: exiting now; unacked messages will be redelivered");
            std::process::exit(130);
        });
    })
}
