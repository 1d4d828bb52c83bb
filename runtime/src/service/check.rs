//! `wharf check`: every handler's component and world, and with a server,
//! the streams and subjects the configuration needs.

use anyhow::Context as _;
use async_nats::jetstream;

use super::prepare_handlers;
use crate::config::Config;
use crate::connect;
use crate::delivery::binding::{self, BindError};
use crate::delivery::partition;
use crate::problems::Problems;
use crate::stream_spec::{self, Found};

/// One handler as `check` found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// The handler's name.
    pub handler: String,
    /// The world its component implements and what else it imports, e.g.
    /// `wharf:handler/batch-handler@0.2.0` or
    /// `wasmcloud:messaging@0.2.0 (compatibility), with wasi:keyvalue@0.2.0-draft2`.
    pub world: String,
}

/// Validates a configuration and its components without a server, says
/// which world each handler's component implements, and reports every
/// handler whose component fails, not only the first.
pub async fn check(config: &Config) -> anyhow::Result<Vec<Checked>> {
    let in_config = || format!("config {}", config.path.display());
    let all = match prepare_handlers(config).await {
        Ok(prepared) => {
            return Ok(prepared
                .loaded
                .iter()
                .map(|l| Checked {
                    handler: l.guest.handler().name.clone(),
                    world: l.described.clone(),
                })
                .collect());
        }
        Err(all) => all,
    };
    let mut problems = Problems::new();
    if config.handlers.len() > 1 {
        // Each on its own names every handler that fails.
        for h in &config.handlers {
            let one = Config {
                handlers: vec![h.clone()],
                ..config.clone()
            };
            if let Err(e) = prepare_handlers(&one).await {
                problems.add(e);
            }
        }
    }
    if problems.is_empty() {
        // Only together do they fail (the instance pool, say).
        problems.add(all);
    }
    Err(problems
        .into_result()
        .with_context(in_config)
        .expect_err("a problem was added"))
}

/// Checks what `check` does, then, against the server, that every declared
/// `[[stream]]` exists as declared, every handler's stream exists, and its
/// dead-letter and publish subjects are stored by a stream; reports every
/// problem found.
pub async fn check_with_server(config: &Config) -> anyhow::Result<Vec<Checked>> {
    let mut problems = Problems::new();
    let checked = match check(config).await {
        Ok(checked) => checked,
        Err(e) => {
            problems.add(e);
            Vec::new()
        }
    };
    let in_config = || format!("config {}", config.path.display());
    let client = match connect::connect(&config.nats, "wharf-check").await {
        Ok(client) => client,
        Err(e) => {
            problems.add(e);
            return Err(problems
                .into_result()
                .with_context(in_config)
                .expect_err("a problem was added"));
        }
    };
    let js = jetstream::new(client);
    for s in &config.streams {
        match stream_spec::find(&js, s).await {
            Err(e) => problems.add(e),
            Ok(Found::Same) => {}
            Ok(Found::Missing) => problems.push(format!(
                "stream \"{}\" is declared in a [[stream]] table but does not exist; \
                 create it with `wharf streams apply -c {}`",
                s.name,
                config.path.display()
            )),
            Ok(Found::Differs(diffs, _)) => problems.push(format!(
                "stream \"{}\" differs from its [[stream]] table: {}; \
                 `wharf streams apply --update` changes it",
                s.name,
                diffs.join("; ")
            )),
        }
    }
    for handler in &config.handlers {
        if let Err(BindError::Config(e) | BindError::Unavailable(e)) =
            binding::subjects(&js, handler).await
        {
            problems.add(e);
        } else if handler.order_by.is_some()
            && let Err(BindError::Config(e) | BindError::Unavailable(e)) =
                partition::plan(&js, handler).await
        {
            problems.add(e);
        }
    }
    if let Err(BindError::Config(e) | BindError::Unavailable(e)) =
        crate::delivery::state::open(&js, config).await
    {
        problems.add(e);
    }
    problems.into_result().with_context(in_config)?;
    Ok(checked)
}
