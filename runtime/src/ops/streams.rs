//! `wharf streams apply`: creates the streams a config declares in
//! `[[stream]]` tables, verifies the ones that exist (an existing stream
//! is changed only with `--update`, and never silently), creates the
//! key-value buckets the handlers name and the effects stream when one may
//! write, and then checks that every handler's input stream, dead-letter
//! subject and literal publish subjects are covered, so that `wharf run`
//! will start.

use std::io::Write;

use anyhow::Context as _;
use async_nats::jetstream;

use crate::config::{Config, Connection};
use crate::connect::{SUBJECT_TRANSFORMS, server_version};
use crate::delivery::binding::{self, BindError};
use crate::problems::Problems;
use crate::stream_spec::{self, Found};

/// Connects with the config's `[nats]` settings overlaid by `cli`, applies
/// the declared streams and checks the handlers' subjects, writing one
/// line per stream to `out`. Fails with every problem at once.
pub async fn run(
    config: &Config,
    cli: Connection,
    update: bool,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let connection = config.nats.clone().overlaid(cli);
    let client = crate::connect::connect(&connection, "wharf-streams").await?;
    apply(&jetstream::new(client), config, update, out).await
}

/// Applies the declared streams, then checks the handlers' subjects.
pub async fn apply(
    js: &jetstream::Context,
    config: &Config,
    update: bool,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let mut problems = Problems::new();
    declared(js, config, update, out, &mut problems).await?;
    crate::delivery::state::create(js, config).await?;
    covered(js, config, &mut problems).await;
    problems
        .into_result()
        .with_context(|| format!("config {}", config.path.display()))
}

/// Creates each declared stream that is missing; one that exists with
/// other settings is updated only when `update` is set, and otherwise
/// reported with what differs.
pub(crate) async fn declared(
    js: &jetstream::Context,
    config: &Config,
    update: bool,
    out: &mut impl Write,
    problems: &mut Problems,
) -> anyhow::Result<()> {
    for s in &config.streams {
        let name = &s.name;
        if s.partitions.is_some() && server_version(&js.client()) < SUBJECT_TRANSFORMS {
            problems.push(format!(
                "stream \"{name}\": field `partitions`: nats-server {} has no subject transforms \
                 (they need 2.10 or later, and ordered mode on several hosts 2.11), so the \
                 stream cannot be partitioned; remove `partitions`",
                js.client().server_info().version
            ));
            continue;
        }
        match stream_spec::find(js, s).await? {
            Found::Missing => match js.create_stream(stream_spec::desired(s)).await {
                Ok(_) => writeln!(
                    out,
                    "stream \"{name}\": created ({})",
                    stream_spec::summary(s)
                )?,
                Err(e) => problems.push(format!(
                    "stream \"{name}\": the server refused to create it: {e}"
                )),
            },
            Found::Same => writeln!(out, "stream \"{name}\": up to date")?,
            Found::Differs(diffs, have) if update => {
                match js.update_stream(stream_spec::updated(*have, s)).await {
                    Ok(_) => writeln!(out, "stream \"{name}\": updated: {}", diffs.join("; "))?,
                    Err(e) => problems.push(format!(
                        "stream \"{name}\": the server refused to change {}: {e}",
                        diffs.join("; ")
                    )),
                }
            }
            Found::Differs(diffs, _) => {
                writeln!(
                    out,
                    "stream \"{name}\": differs from the config; left as it is"
                )?;
                problems.push(format!(
                    "stream \"{name}\" differs from its [[stream]] table: {}; nothing was \
                     changed: run `wharf streams apply --update` to change it",
                    diffs.join("; ")
                ));
            }
        }
    }
    Ok(())
}

/// Every handler's input stream exists, and its dead-letter and literal
/// publish subjects are stored by streams that fit.
pub(crate) async fn covered(js: &jetstream::Context, config: &Config, problems: &mut Problems) {
    for h in &config.handlers {
        match binding::subjects(js, h).await {
            Ok(()) => {}
            Err(BindError::Config(e) | BindError::Unavailable(e)) => problems.add(e),
        }
    }
}
