//! Running a handler's guest: a fresh instance per delivery (or, with
//! `isolation = "reuse"`, an idle one that never failed), the call to
//! `handle`, the guest's output, and what the delivery produced. Only this
//! module creates Stores.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::{info, warn};
use wasmtime::{Engine, Store, Trap};

use crate::bindings::{Handler, HandlerError, HandlerPre, Message};
use crate::config::{HandlerConfig, Isolation};
use crate::engine::EPOCH_TICK;
use crate::host::publish::Outgoing;
use crate::host::wasi::Output;
use crate::settle::{Failure, Outcome};
use crate::store::{Shared, StoreState, new_store, rearm};
use crate::telemetry::RunTimes;

/// How much of the end of a guest's stderr a trap's reason keeps: that is
/// where a Rust panic message, a Python traceback's last line or a JS
/// error's `name: message` land.
const STDERR_TAIL: usize = 700;

/// One handler's compiled component and the instances it may reuse.
pub(crate) struct Guest {
    engine: Engine,
    pre: HandlerPre<StoreState>,
    shared: Shared,
    /// Idle instances for `isolation = "reuse"`; each serves one delivery at a time.
    idle: Mutex<Vec<Idle>>,
}

/// An instance waiting for its next delivery in reuse mode.
struct Idle {
    store: Store<StoreState>,
    instance: Handler,
    uses: u32,
}

/// What running the guest for one delivery produced.
pub(crate) struct Ran {
    pub outcome: Outcome,
    /// The outbox, when the guest succeeded; empty otherwise.
    pub outputs: Vec<Outgoing>,
    /// How long it took; `None` when the guest was not run.
    pub times: Option<RunTimes>,
}

impl Guest {
    pub(crate) fn new(engine: Engine, pre: HandlerPre<StoreState>, shared: Shared) -> Guest {
        Guest {
            engine,
            pre,
            shared,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// The same compiled component with other per-delivery settings.
    pub(crate) fn with_settings(&self, shared: Shared) -> Guest {
        Guest::new(self.engine.clone(), self.pre.clone(), shared)
    }

    /// The server's `max_payload`, once known.
    pub(crate) fn max_payload(&self) -> Option<usize> {
        self.shared.max_payload.known()
    }

    pub(crate) fn handler(&self) -> &Arc<HandlerConfig> {
        &self.shared.handler
    }

    /// Instantiates the component once, as a delivery would, to refuse at
    /// start-up one that cannot start within the handler's limits.
    pub(crate) async fn probe(&self) -> anyhow::Result<()> {
        let mut store = new_store(&self.engine, &self.shared);
        let deadline = store.data().deadline() + 2 * EPOCH_TICK;
        let started =
            tokio::time::timeout_at(deadline.into(), self.pre.instantiate_async(&mut store)).await;
        let handler = &self.shared.handler;
        let limits = &store.data().limits;
        let timeout = || {
            anyhow::anyhow!(
                "handler \"{}\": component {} does not finish starting within `timeout` = {}",
                handler.name,
                handler.component.display(),
                humantime::format_duration(handler.timeout)
            )
        };
        match started {
            Ok(Ok(_)) => Ok(()),
            _ if limits.hit == Some(Failure::Memory) => {
                Err(memory_too_small(handler, limits.wanted as u64))
            }
            Err(_) => Err(timeout()),
            Ok(Err(_)) if limits.hit == Some(Failure::Timeout) => Err(timeout()),
            Ok(Err(e)) => Err(anyhow::Error::from(e).context(format!(
                "handler \"{}\": component {} failed to start",
                handler.name,
                handler.component.display()
            ))),
        }
    }

    /// Runs `handle` for one message in a fresh instance, or, with
    /// `isolation = "reuse"`, in an idle instance that has served fewer than
    /// its limit and never failed.
    pub(crate) async fn run(&self, message: &Message) -> Ran {
        let handler = &self.shared.handler;
        let reused = match handler.isolation {
            Isolation::Fresh => None,
            Isolation::Reuse(_) => self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop(),
        };
        let (mut store, instance, uses) = match reused {
            Some(mut idle) => {
                rearm(&mut idle.store);
                (idle.store, Some(idle.instance), idle.uses)
            }
            None => (new_store(&self.engine, &self.shared), None, 0),
        };
        // The epoch deadline stops a guest that runs code; this stops one
        // blocked in a host call (a WASI sleep, a poll) at the same time.
        let deadline = store.data().deadline() + 2 * EPOCH_TICK;
        let started = Instant::now();
        let mut instantiate = Duration::ZERO;
        let call = async {
            let instance = match instance {
                Some(i) => i,
                None => {
                    let i = self.instantiate(&mut store).await?;
                    instantiate = started.elapsed();
                    i
                }
            };
            let result = instance.call_handle(&mut store, message).await;
            result.map(|r| (r, instance))
        };
        let result = tokio::time::timeout_at(deadline.into(), call).await;
        let times = RunTimes {
            instantiate,
            total: started.elapsed(),
        };
        let state = store.data_mut();
        let output = state.wasi.output.take();
        log_output(&self.shared.name, &output, state.log.dropped);
        let (outcome, instance) = match result {
            Ok(Ok((Ok(()), instance))) => (Outcome::Ok, Some(instance)),
            Ok(Ok((Err(HandlerError::Retry(ms)), instance))) => (
                Outcome::Retry {
                    delay: ms.map(Duration::from_millis),
                },
                Some(instance),
            ),
            Ok(Ok((Err(HandlerError::Reject(reason)), instance))) => {
                (Outcome::Reject { reason }, Some(instance))
            }
            Ok(Err(e)) => {
                let (failure, detail) =
                    classify(&e, state.limits.hit, handler, &output.stderr_tail);
                (Outcome::Failed { failure, detail }, None)
            }
            Err(_) => (
                Outcome::Failed {
                    failure: Failure::Timeout,
                    detail: format!(
                        "handler exceeded its timeout of {} (blocked in a host call)",
                        humantime::format_duration(handler.timeout)
                    ),
                },
                None,
            ),
        };
        let outputs = if outcome == Outcome::Ok {
            state.outbox.take()
        } else {
            Vec::new()
        };
        // A failed instance is never used again: its state may be anything.
        if let (Isolation::Reuse(limit), Some(instance)) = (handler.isolation, instance)
            && uses + 1 < limit
        {
            self.idle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(Idle {
                    store,
                    instance,
                    uses: uses + 1,
                });
        }
        Ran {
            outcome,
            outputs,
            times: Some(times),
        }
    }

    /// A new instance in `store`. The pool can be full for a moment (while a
    /// reload's old version still holds idle instances, say): that is the
    /// host's, not the guest's, so the host tries again with a new Store
    /// until the delivery's deadline, which the caller enforces. A guest that
    /// traps or hits a limit while it starts fails at once.
    async fn instantiate(&self, store: &mut Store<StoreState>) -> wasmtime::Result<Handler> {
        loop {
            match self.pre.instantiate_async(&mut *store).await {
                Ok(instance) => return Ok(instance),
                Err(e)
                    if e.downcast_ref::<Trap>().is_some() || store.data().limits.hit.is_some() =>
                {
                    return Err(e);
                }
                Err(e) => {
                    tracing::debug!(error = %e, "no instance could be created; trying again");
                    tokio::time::sleep(EPOCH_TICK).await;
                    let deadline = store.data().deadline();
                    *store = new_store(&self.engine, &self.shared);
                    store.data_mut().set_deadline(deadline);
                }
            }
        }
    }

    /// Times `n` deliveries of `message` without NATS: a fresh Store,
    /// instantiation and the call each time. Returns the mean time to
    /// instantiate and the mean time of the call.
    pub(crate) async fn time(
        &self,
        message: &Message,
        n: u32,
    ) -> anyhow::Result<(Duration, Duration)> {
        let mut instantiate = Duration::ZERO;
        let mut call = Duration::ZERO;
        for _ in 0..n {
            let t0 = Instant::now();
            let mut store = new_store(&self.engine, &self.shared);
            let instance = self.pre.instantiate_async(&mut store).await?;
            let t1 = Instant::now();
            let result = instance.call_handle(&mut store, message).await?;
            drop(store);
            let t2 = Instant::now();
            anyhow::ensure!(result.is_ok(), "the guest did not succeed");
            instantiate += t1 - t0;
            call += t2 - t1;
        }
        let n = n.max(1);
        Ok((instantiate / n, call / n))
    }
}

/// The error for a `memory` setting below what the component needs to start.
pub(crate) fn memory_too_small(handler: &HandlerConfig, needed: u64) -> anyhow::Error {
    anyhow::anyhow!(
        "handler \"{}\": field `memory`: component {} needs at least {} of linear memory \
         to start, more than `memory` = {}; raise it",
        handler.name,
        handler.component.display(),
        crate::config::mib(needed),
        crate::config::mib(handler.memory)
    )
}

/// Tells a limit from a trap, and says which in words fit for a dead-letter reason.
fn classify(
    err: &wasmtime::Error,
    hit: Option<Failure>,
    config: &HandlerConfig,
    stderr: &[u8],
) -> (Failure, String) {
    let trap = err.downcast_ref::<Trap>().copied();
    match (hit, trap) {
        (Some(Failure::Timeout), _) => (
            Failure::Timeout,
            format!(
                "handler exceeded its timeout of {}",
                humantime::format_duration(config.timeout)
            ),
        ),
        (_, Some(Trap::OutOfFuel)) => (Failure::Timeout, "handler ran out of fuel".to_string()),
        (Some(Failure::Memory), _) => (
            Failure::Memory,
            format!(
                "handler exceeded its memory limit of {} bytes",
                config.memory
            ),
        ),
        (_, Some(Trap::StackOverflow)) => {
            (Failure::Trap, with_stderr("stack overflow".into(), stderr))
        }
        (_, Some(t)) => (Failure::Trap, with_stderr(format!("trap: {t}"), stderr)),
        (_, None) => (Failure::Trap, with_stderr(format!("{err:#}"), stderr)),
    }
}

/// Appends the end of the guest's stderr to a trap reason.
fn with_stderr(detail: String, stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let text = text.trim();
    if text.is_empty() {
        return detail;
    }
    format!(
        "{detail}; stderr: {}",
        crate::text::tail(text, STDERR_TAIL, "…")
    )
}

fn log_output(handler: &str, output: &Output, log_dropped: u64) {
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let line = crate::text::escape_controls(line);
        info!(target: "wharf::guest", handler, stream = "stdout", "{line}");
    }
    for line in String::from_utf8_lossy(&output.stderr).lines() {
        let line = crate::text::escape_controls(line);
        warn!(target: "wharf::guest", handler, stream = "stderr", "{line}");
    }
    if output.dropped > 0 {
        warn!(target: "wharf::guest", handler, dropped = output.dropped, "guest output over the cap was dropped");
    }
    if log_dropped > 0 {
        warn!(target: "wharf::guest", handler, dropped = log_dropped, "guest log lines over the cap were dropped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trap_reason_keeps_the_end_of_stderr() {
        let stderr = format!("{}\nValueError: the last line", "x".repeat(2000));
        let reason = with_stderr("trap: unreachable".into(), stderr.as_bytes());
        assert!(
            reason.starts_with("trap: unreachable; stderr: …"),
            "{reason}"
        );
        assert!(reason.ends_with("ValueError: the last line"), "{reason}");
        assert!(reason.len() < 800, "{}", reason.len());
        assert_eq!(with_stderr("trap".into(), b"  \n"), "trap");
    }
}
