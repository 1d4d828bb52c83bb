//! The `wharf` command: parses arguments, sets up logging, and calls the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser as _;
use wharf::config::{Config, Connection};

mod args;
mod logs;

use args::{Cli, Command, DlqAction, StreamsAction};
use wharf::dlq::Selector;

fn main() -> ExitCode {
    let cli = Cli::parse();
    logs::init(&cli.log_format);
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
            let checked = match server {
                None => runtime.block_on(wharf::check(&config))?,
                Some(url) => {
                    config.nats.url = Some(url);
                    runtime.block_on(wharf::check_with_server(&config))?
                }
            };
            println!(
                "{}: ok ({} handler{})",
                config.path.display(),
                config.handlers.len(),
                if config.handlers.len() == 1 { "" } else { "s" }
            );
            for c in checked {
                println!("handler \"{}\": world: {}", c.handler, c.world);
            }
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
        Command::Dev {
            config,
            metrics,
            port,
            data_dir,
        } => {
            let mut config = Config::load(&config.config)?;
            if metrics.metrics_addr.is_some() {
                config.runtime.metrics_addr = metrics.metrics_addr;
            }
            config.runtime.watch |= metrics.watch;
            let options = wharf::dev::Options { port, data_dir };
            runtime
                .block_on(async { wharf::dev::run(config, options, wharf::Signals::new()?).await })
        }
        Command::Streams {
            action:
                StreamsAction::Apply {
                    config,
                    nats,
                    update,
                },
        } => {
            let config = Config::load(&config.config)?;
            runtime.block_on(wharf::streams::run(
                &config,
                nats,
                update,
                &mut std::io::stdout(),
            ))
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
