//! Running a batch: one call of `handle-batch` with every message of the
//! batch, in a fresh instance (or an idle one, in reuse mode), and each
//! message's own result with what it staged; or the failure of the call as
//! a whole, which keeps nothing any message staged.

use super::{Call, Guest, Ran, Returned, blocked, classify, log_output, outcome};
use crate::sandbox::bindings::Message;
use crate::settle::{Failure, Outcome};
use crate::telemetry::RunTimes;

/// What one call of `handle-batch` produced.
pub(crate) enum BatchRan {
    /// One result per message, in the batch's order: its outcome, and what
    /// it staged if it succeeded (nothing otherwise).
    Each(Vec<Ran>),
    /// The call failed as a whole: a trap, the deadline, the memory cap, or
    /// a result list of another length than the batch.
    Failed { failure: Failure, detail: String },
}

/// A batch call's results and how long it took.
pub(crate) struct RanBatch {
    pub ran: BatchRan,
    pub times: RunTimes,
}

impl Guest {
    /// Runs `handle-batch` for `messages` (at least one) in one instance.
    pub(crate) async fn run_batch(&self, messages: &[Message]) -> RanBatch {
        let handler = &self.shared.handler;
        let n = messages.len();
        let (result, mut called) = self.call(Call::Batch(messages)).await;
        let state = called.store.data_mut();
        let output = state.wasi.output.take();
        log_output(&self.shared.name, &output, state.log.dropped);
        let staged = state.batch.take();
        let ran = match result {
            Ok(Ok(Returned::Batch(results))) if results.len() == n => BatchRan::Each(
                results
                    .into_iter()
                    .zip(staged)
                    .map(|(result, (outputs, writes))| {
                        let outcome = outcome(result);
                        // Released only if this message succeeded.
                        let ok = outcome == Outcome::Ok;
                        Ran {
                            outcome,
                            outputs: if ok { outputs } else { Vec::new() },
                            writes: if ok { writes } else { Vec::new() },
                            times: None,
                        }
                    })
                    .collect(),
            ),
            Ok(Ok(Returned::Batch(results))) => {
                called.instance = None;
                BatchRan::Failed {
                    failure: Failure::Trap,
                    detail: format!(
                        "handle-batch returned {} results for a batch of {n} messages",
                        results.len()
                    ),
                }
            }
            Ok(Ok(Returned::One(_))) => unreachable!("a batch call returns a list"),
            Ok(Err(e)) => {
                called.instance = None;
                let (failure, detail) =
                    classify(&e, state.limits.hit, handler, &output.stderr_tail);
                BatchRan::Failed { failure, detail }
            }
            Err(_) => {
                called.instance = None;
                match blocked(handler) {
                    Outcome::Failed { failure, detail } => BatchRan::Failed { failure, detail },
                    _ => unreachable!("blocked is a failure"),
                }
            }
        };
        let times = called.times;
        self.keep(called, u32::try_from(n).unwrap_or(u32::MAX));
        RanBatch { ran, times }
    }
}
