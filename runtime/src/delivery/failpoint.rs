//! Crash-test hooks, compiled in only with the `failpoints` feature: the
//! process exits at the worst moments for duplicates, so the integration
//! tests can check the books across a crash there.

/// Exits the process when this point has been passed `N` times, where `N`
/// is the value of the variable `var` (unset or 0: never).
#[cfg(feature = "failpoints")]
fn exit_at(
    var: &'static str,
    count: &std::sync::atomic::AtomicU64,
    every: &std::sync::OnceLock<Option<u64>>,
    what: &str,
) {
    use std::sync::atomic::Ordering;
    let every = every.get_or_init(|| {
        std::env::var(var)
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|n| *n > 0)
    });
    if let Some(n) = every
        && count.fetch_add(1, Ordering::SeqCst) + 1 == *n
    {
        eprintln!("failpoint: exiting {what}");
        std::process::exit(86);
    }
}

/// With `WHARF_FAILPOINT_EXIT_AFTER_OUTBOX=N` set, the process exits on its
/// N-th confirmed outbox, after the outputs are stored and before the input
/// is acked.
pub(crate) fn after_outbox() {
    #[cfg(feature = "failpoints")]
    {
        static COUNT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        static EVERY: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
        exit_at(
            "WHARF_FAILPOINT_EXIT_AFTER_OUTBOX",
            &COUNT,
            &EVERY,
            "after the outbox was confirmed, before the ack",
        );
    }
}

/// With `WHARF_FAILPOINT_EXIT_AFTER_WRITES=N` set, the process exits on its
/// N-th applied set of key-value writes, after the writes and before the
/// outputs and the ack.
pub(crate) fn after_writes() {
    #[cfg(feature = "failpoints")]
    {
        static COUNT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        static EVERY: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
        exit_at(
            "WHARF_FAILPOINT_EXIT_AFTER_WRITES",
            &COUNT,
            &EVERY,
            "after the key-value writes were applied, before the outputs and the ack",
        );
    }
}
