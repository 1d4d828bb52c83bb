//! Write Wharf message handlers in plain Rust.
//!
//! A handler is one function from a [`Message`] to a [`Result`]. Returning
//! `Ok(())` acks the message (after everything you [`publish`]ed is stored
//! and every key-value write it staged is applied); returning an [`Error`]
//! either retries it later ([`Error::retry`]) or dead-letters it now
//! ([`Error::reject`]). The [`handler!`] macro turns the function into the
//! component's export.
//!
//! ```no_run
//! use wharf_guest::{Message, Result};
//!
//! fn handle(msg: Message) -> Result {
//!     let name = msg.text()?;
//!     wharf_guest::publish("greetings", format!("hello, {name}"))?;
//!     Ok(())
//! }
//!
//! wharf_guest::handler!(handle);
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2` and point a
//! `[[handler]]` entry of `wharf.toml` at the `.wasm` file. The component
//! implements the `handler` world of `wharf:handler@0.2.0` (`wit/0.2.0`).
//!
//! - [`kv`]: key-value state in JetStream buckets, read as the handler runs
//!   and written when the message succeeds.
//! - [`batch`]: handlers of several messages per call, with one result per
//!   message ([`batch_handler!`], the `batch-handler` world).
//! - `testing` (native builds with std): an in-memory host to unit-test
//!   handlers, their outputs and their key-value state with `cargo test`.
//!
//! # Without the standard library
//!
//! With `default-features = false` (and without the `std` feature) the SDK is
//! `#![no_std]`: a handler crate that is `#![no_std]` too, and depends on
//! nothing that needs std, compiles to a component that imports nothing from
//! WASI. Such a component starts in less than half the time, which is most of
//! what a delivery costs when every delivery gets a fresh instance (see
//! `BENCHMARKS.md`). [`handler!`] then also installs the SDK's allocator and a
//! panic handler. The trade-offs:
//!
//! - a panic traps without its message, so the dead-letter reason says only
//!   that the handler trapped: log what went wrong before you give up;
//! - `format!`, `String` and `Vec` come from `alloc`
//!   (`extern crate alloc;`), and `Message::published_at` is
//!   [`Message::published_at_nanos`];
//! - the `json` feature still works, through `serde_json` without std;
//! - there is no `testing` module.
//!
//! ```toml
//! [dependencies]
//! wharf-guest = { path = "/path/to/wharf/guests/sdk", default-features = false }
//! ```
#![deny(missing_docs)]
#![cfg_attr(not(feature = "std"), no_std)]

extern crate alloc;

use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;

pub mod batch;
mod error;
#[cfg(all(not(feature = "std"), target_arch = "wasm32"))]
mod heap;
pub mod kv;
#[cfg(all(not(feature = "std"), target_arch = "wasm32"))]
mod libc;
pub mod log;
mod message;
mod sys;
// Documented on every target, built natively only: in a component the
// SDK's calls go to the real host.
#[cfg(all(feature = "std", any(doc, not(target_arch = "wasm32"))))]
pub mod testing;

pub use error::{Error, PublishError, Result};
pub use message::Message;

/// The `handler` world: `handle`, with the `host` and `kv` imports.
#[doc(hidden)]
#[allow(clippy::too_many_arguments)] // Generated code.
pub mod __bindings {
    wit_bindgen::generate!({
        path: "../../wit/0.2.0",
        world: "handler",
        pub_export_macro: true,
        export_macro_name: "__export_world",
        default_bindings_module: "::wharf_guest::__bindings",
    });
}

/// The `batch-handler` world: `handle-batch`, with the `batch-host` import.
/// It shares the `handler` world's types, so a batch's messages are the
/// same [`Message`] type.
#[doc(hidden)]
#[allow(clippy::too_many_arguments)] // Generated code.
pub mod __batch_bindings {
    wit_bindgen::generate!({
        path: "../../wit/0.2.0",
        world: "batch-handler",
        pub_export_macro: true,
        export_macro_name: "__export_batch_world",
        default_bindings_module: "::wharf_guest::__batch_bindings",
        with: {
            "wharf:handler/types@0.2.0": crate::__bindings::wharf::handler::types,
            "wharf:handler/kv-types@0.2.0": crate::__bindings::wharf::handler::kv_types,
        },
    });
}

use __bindings::wharf::handler::types;

/// Headers as the host takes them: each name once, with its values in order.
pub(crate) fn group_headers(headers: &[(&str, &str)]) -> Vec<types::Header> {
    let mut grouped: Vec<types::Header> = Vec::new();
    for (name, value) in headers {
        match grouped.iter_mut().find(|h| h.name == *name) {
            Some(h) => h.values.push(value.to_string()),
            None => grouped.push(types::Header {
                name: name.to_string(),
                values: vec![value.to_string()],
            }),
        }
    }
    grouped
}

/// Queues a message for publication when this delivery succeeds.
///
/// Nothing leaves the host while the handler runs: on `Ok(())` the host
/// publishes the outbox to JetStream in order, with a deterministic
/// `Nats-Msg-Id` per message, before it acks the input.
///
/// # Examples
///
/// ```no_run
/// wharf_guest::publish("orders.accepted", b"{\"id\": 7}")?;
/// # Ok::<(), wharf_guest::PublishError>(())
/// ```
pub fn publish(subject: &str, payload: impl AsRef<[u8]>) -> Result<(), PublishError> {
    publish_with_headers(subject, payload, &[])
}

/// Queues a message with headers, in one call. A name given twice gets both values.
///
/// A `Nats-Msg-Id` header set here is kept and replaces the host's
/// deterministic id: use a value that is the same on every redelivery (an
/// order id, say), or JetStream cannot drop duplicates.
///
/// # Examples
///
/// ```no_run
/// wharf_guest::publish_with_headers(
///     "billing.charge",
///     b"{\"cents\": 1200}",
///     &[("order-id", "7"), ("currency", "EUR")],
/// )?;
/// # Ok::<(), wharf_guest::PublishError>(())
/// ```
pub fn publish_with_headers(
    subject: &str,
    payload: impl AsRef<[u8]>,
    headers: &[(&str, &str)],
) -> Result<(), PublishError> {
    sys::publish(subject, payload.as_ref(), &group_headers(headers)).map_err(PublishError::from)
}

/// Queues a value serialised as JSON.
///
/// # Examples
///
/// ```no_run
/// #[derive(serde::Serialize)]
/// struct Accepted { id: u64 }
///
/// wharf_guest::publish_json("orders.accepted", &Accepted { id: 7 })?;
/// # Ok::<(), wharf_guest::PublishError>(())
/// ```
#[cfg(feature = "json")]
pub fn publish_json<T: serde::Serialize>(subject: &str, value: &T) -> Result<(), PublishError> {
    let bytes = serde_json::to_vec(value).map_err(|e| PublishError::Invalid(e.to_string()))?;
    publish_with_headers(subject, bytes, &[("Content-Type", "application/json")])
}

/// Looks up one of the handler's configured key/values (`[handler.config]` in `wharf.toml`).
///
/// # Examples
///
/// ```no_run
/// let region = wharf_guest::config("region").unwrap_or_else(|| "eu".to_string());
/// ```
pub fn config(key: &str) -> Option<String> {
    sys::config(key)
}

#[doc(hidden)]
pub mod __private {
    pub use alloc::vec::Vec;

    use super::__bindings::wharf::handler::types;
    use super::batch::{Batch, BatchMessage};
    use super::log::Level;
    use super::{Error, Message, Result};

    #[cfg(all(not(feature = "std"), target_arch = "wasm32"))]
    pub use super::heap::Heap;
    pub use alloc::format;

    fn to_wit(result: Result) -> core::result::Result<(), types::HandlerError> {
        result.map_err(|e| match e {
            Error::Retry(d) => types::HandlerError::Retry(
                d.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            ),
            Error::Reject(reason) => types::HandlerError::Reject(reason),
        })
    }

    pub fn call(
        msg: types::Message,
        f: fn(Message) -> Result,
    ) -> core::result::Result<(), types::HandlerError> {
        to_wit(f(Message::from_raw(msg)))
    }

    pub fn call_batch(
        msgs: Vec<types::Message>,
        f: fn(Batch) -> Vec<Result>,
    ) -> Vec<core::result::Result<(), types::HandlerError>> {
        let len = msgs.len();
        let results = f(Batch::new(msgs));
        check_batch_results(results.len(), len);
        results.into_iter().map(to_wit).collect()
    }

    /// A batch handler returns one result per message; the host fails a
    /// batch with another count as a trap, so the SDK traps first, saying so.
    pub fn check_batch_results(got: usize, messages: usize) {
        assert!(
            got == messages,
            "the batch handler returned {got} results for a batch of {messages} messages; \
             return one result per message, in the batch's order"
        );
    }

    /// What the log macros log to when given a target: a batch or one of its messages.
    pub trait Logger {
        /// Writes one line.
        fn log_line(&self, level: Level, message: &str);
    }

    impl Logger for Batch {
        fn log_line(&self, level: Level, message: &str) {
            self.log(level, message);
        }
    }

    impl Logger for BatchMessage {
        fn log_line(&self, level: Level, message: &str) {
            self.log(level, message);
        }
    }

    impl<T: Logger + ?Sized> Logger for &T {
        fn log_line(&self, level: Level, message: &str) {
            (**self).log_line(level, message);
        }
    }

    pub fn log_to<L: Logger + ?Sized>(target: &L, level: Level, message: alloc::string::String) {
        target.log_line(level, &message);
    }
}

/// Exports a `fn(Message) -> Result` as the component's handler: the
/// `handler` world's `handle`. A component has one handler, made by this
/// macro or by [`batch_handler!`], never both.
///
/// Without the `std` feature it also installs the SDK's allocator and a
/// panic handler that traps: what a handler built without std needs (see
/// the crate's documentation).
///
/// # Examples
///
/// ```no_run
/// fn handle(msg: wharf_guest::Message) -> wharf_guest::Result {
///     wharf_guest::info!("got {} bytes", msg.payload().len());
///     Ok(())
/// }
///
/// wharf_guest::handler!(handle);
/// ```
#[macro_export]
macro_rules! handler {
    ($f:path) => {
        const _: () = {
            struct __WharfHandler;

            impl $crate::__bindings::Guest for __WharfHandler {
                fn handle(
                    msg: $crate::__bindings::Message,
                ) -> ::core::result::Result<(), $crate::__bindings::HandlerError> {
                    $crate::__private::call(msg, $f)
                }
            }

            $crate::__bindings::__export_world!(__WharfHandler);
        };
        $crate::__one_handler!();
        $crate::__runtime!();
    };
}

/// Exports a `fn(Batch) -> Vec<Result>` as the component's handler: the
/// `batch-handler` world's `handle-batch`, returning one result per message
/// in the batch's order (see [`batch`]). A component has one handler, made
/// by this macro or by [`handler!`], never both.
///
/// Without the `std` feature it also installs the SDK's allocator and a
/// panic handler, as [`handler!`] does.
///
/// # Examples
///
/// ```no_run
/// use wharf_guest::batch::Batch;
///
/// fn handle_batch(batch: Batch) -> Vec<wharf_guest::Result> {
///     batch.iter().map(|msg| Ok(msg.publish("copies", msg.payload())?)).collect()
/// }
///
/// wharf_guest::batch_handler!(handle_batch);
/// ```
#[macro_export]
macro_rules! batch_handler {
    ($f:path) => {
        const _: () = {
            struct __WharfBatchHandler;

            impl $crate::__batch_bindings::Guest for __WharfBatchHandler {
                fn handle_batch(
                    msgs: $crate::__private::Vec<$crate::__batch_bindings::Message>,
                ) -> $crate::__private::Vec<
                    ::core::result::Result<(), $crate::__batch_bindings::HandlerError>,
                > {
                    $crate::__private::call_batch(msgs, $f)
                }
            }

            $crate::__batch_bindings::__export_batch_world!(__WharfBatchHandler);
        };
        $crate::__one_handler!();
        $crate::__runtime!();
    };
}

/// An item both export macros define where they are called, so that
/// calling both in one module (a component exporting `handle` and
/// `handle-batch`) fails to compile, naming the rule.
#[doc(hidden)]
#[macro_export]
macro_rules! __one_handler {
    () => {
        #[doc(hidden)]
        #[allow(dead_code, non_camel_case_types)]
        enum a_component_has_one_handler_made_by_handler_or_batch_handler {}
    };
}

/// What a component needs besides its export: nothing with std.
#[cfg(feature = "std")]
#[doc(hidden)]
#[macro_export]
macro_rules! __runtime {
    () => {};
}

/// What a component needs besides its export: without std, the SDK's
/// allocator and a panic handler that traps.
#[cfg(not(feature = "std"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __runtime {
    () => {
        // Left out of test builds, which link std and its own.
        #[cfg(all(not(test), target_arch = "wasm32"))]
        #[global_allocator]
        static __WHARF_HEAP: $crate::__private::Heap = $crate::__private::Heap;

        #[cfg(all(not(test), target_arch = "wasm32"))]
        #[panic_handler]
        fn __wharf_panic(_: &::core::panic::PanicInfo<'_>) -> ! {
            ::core::arch::wasm32::unreachable()
        }
    };
}
