//! Shutdown: the signals that start it, and how the binary turns them into
//! the future `run` takes. Draining itself is the pull loop's last step
//! (`crate::delivery::pull::run`), bounded by `drain_timeout`.

use anyhow::Context as _;

/// SIGINT and SIGTERM, listened for from creation on, so that a signal
/// arriving while the previous one is being handled is not missed.
pub struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
    /// Listening for SIGHUP from the start replaces its default action
    /// (ending the process): a reload asked for while the host still
    /// compiles, connects or binds is ignored instead of killing it.
    _hangup: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers; call from inside the Tokio runtime.
    pub fn new() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            terminate: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            _hangup: signal(SignalKind::hangup()).context("installing the SIGHUP handler")?,
        })
    }

    /// Resolves on the next SIGINT or SIGTERM.
    pub async fn recv(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }

    /// Resolves on the first signal; a second signal exits the process at
    /// once with code 130. That is still safe: whatever was not acked is
    /// redelivered.
    pub async fn first_then_force(self) {
        self.first_then_force_with(|| {}).await
    }

    /// `first_then_force`, running `cleanup` (stopping a child process,
    /// removing a file) before the second signal exits the process.
    pub async fn first_then_force_with(mut self, cleanup: impl FnOnce() + Send + 'static) {
        self.recv().await;
        tokio::spawn(async move {
            self.recv().await;
            eprintln!("second signal: exiting now; unacked messages will be redelivered");
            cleanup();
            std::process::exit(130);
        });
    }
}
