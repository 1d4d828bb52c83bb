//! The commands that print results on stdout: `check`, `pub` and `dlq`;
//! and `Stdout`, which ends the process quietly when its reader has gone.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context as _;
use wharf::config::{Config, Connection};
use wharf::dlq::Selector;

use crate::args::DlqAction;

/// Standard output for results. When the reader has gone (`wharf dlq list
/// | head -4`), there is no one left to tell, so the process exits with
/// status 0 at once, as other command-line tools do; the commands that
/// write here hold nothing that needs cleaning up.
pub(crate) struct Stdout;

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        quiet_on_broken_pipe(std::io::stdout().write(buf))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        quiet_on_broken_pipe(std::io::stdout().flush())
    }
}

fn quiet_on_broken_pipe<T>(result: std::io::Result<T>) -> std::io::Result<T> {
    match result {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        other => other,
    }
}

/// `wharf check`: the config and every component, and with `--server`
/// the streams and subjects on that server.
pub(crate) async fn check(config: PathBuf, server: Option<String>) -> anyhow::Result<()> {
    let mut config = Config::load(&config)?;
    let checked = match server {
        None => wharf::check(&config).await?,
        Some(url) => {
            config.nats.url = Some(url);
            wharf::check_with_server(&config).await?
        }
    };
    let n = config.handlers.len();
    writeln!(
        Stdout,
        "{}: ok ({n} handler{})",
        config.path.display(),
        if n == 1 { "" } else { "s" }
    )?;
    for c in checked {
        writeln!(Stdout, "handler \"{}\": world: {}", c.handler, c.world)?;
    }
    Ok(())
}

/// `wharf pub`: the payload from the argument or stdin; the config given,
/// or `wharf.toml` when there is one.
pub(crate) async fn publish(
    mut message: wharf::publish::Message,
    payload: Option<String>,
    config: Option<PathBuf>,
    nats: Connection,
) -> anyhow::Result<()> {
    message.payload = match payload.as_deref() {
        Some("-") => {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut bytes)
                .context("reading the payload from stdin")?;
            bytes
        }
        Some(text) => text.as_bytes().to_vec(),
        None => Vec::new(),
    };
    let config = match config {
        Some(path) => Some(Config::load(&path)?),
        None => Some(PathBuf::from("wharf.toml"))
            .filter(|p| p.exists())
            .map(|p| Config::load(&p))
            .transpose()?,
    };
    wharf::publish::run(config.as_ref(), nats, &message, &mut Stdout).await
}

pub(crate) async fn dlq(
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
        DlqAction::List => dlq.list(&mut Stdout).await?,
        DlqAction::Show { seq } => write!(Stdout, "{}", dlq.show(seq).await?)?,
        DlqAction::Replay { remove, .. } => {
            let n = dlq
                .replay(selector.as_ref().expect("parsed above"), remove)
                .await?;
            writeln!(
                Stdout,
                "replayed {n} message(s){}",
                if remove { " and removed them" } else { "" }
            )?;
        }
        DlqAction::Purge { .. } => {
            let n = dlq.purge(selector.as_ref().expect("parsed above")).await?;
            writeln!(Stdout, "deleted {n} message(s)")?;
        }
    }
    Ok(())
}
