//! The `wharf` command: parses arguments, sets up logging, and calls the library.

use std::process::ExitCode;

use clap::Parser as _;
use wharf::config::Config;

mod args;
mod commands;
mod logs;

use args::{Cli, Command, StreamsAction};
use commands::Stdout;

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
            runtime.block_on(commands::check(config.config, server))
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
            runtime.block_on(wharf::streams::run(&config, nats, update, &mut Stdout))
        }
        Command::Pub {
            subject,
            payload,
            headers,
            count,
            config,
            nats,
        } => {
            let message = wharf::publish::Message {
                subject,
                payload: Vec::new(),
                headers,
                count,
            };
            runtime.block_on(commands::publish(message, payload, config, nats))
        }
        Command::Dlq {
            config,
            handler,
            stream,
            nats,
            action,
        } => runtime.block_on(commands::dlq(config, handler, stream, nats, action)),
    }
}
