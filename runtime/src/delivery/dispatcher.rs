//! The dispatcher of one handler: everything its deliveries need (the
//! current version of its guest and settings, the JetStream contexts, the
//! stream cache, the state it may write, its telemetry), and reloads'
//! swapping of versions.

use std::sync::{Arc, RwLock};

use async_nats::jetstream;

use super::stalls::Stalls;
use crate::config::HandlerConfig;
use crate::effects::Jet;
use crate::effects::classify::StreamCache;
use crate::sandbox::guest::Guest;
use crate::settle::Backoff;
use crate::telemetry::HandlerTelemetry;
use crate::throttle::Throttle;

/// Everything needed to run deliveries for one handler.
pub(crate) struct Dispatcher {
    /// The settings the handler was bound with: its stream, consumer and
    /// pull bounds. A reload never changes these.
    pub handler: Arc<HandlerConfig>,
    /// The component and per-delivery settings new deliveries use; a reload
    /// swaps it, and deliveries already running finish on the one they took.
    pub(super) current: RwLock<Arc<Version>>,
    pub(super) jet: Jet,
    /// Deliveries waiting for a stream that is unavailable.
    pub stalls: Stalls,
    /// Which stream stores each output subject.
    pub(super) streams: StreamCache,
    pub(super) throttle: Throttle,
    pub telemetry: HandlerTelemetry,
    /// The buckets and the effects stream, for a handler that may write
    /// key-value state.
    pub(super) state: Option<crate::effects::State>,
}

/// One version of a handler: its component and per-delivery settings.
pub(crate) struct Version {
    pub guest: Guest,
    pub(super) backoff: Backoff,
}

impl Version {
    fn new(guest: Guest) -> Version {
        let h = guest.handler();
        Version {
            backoff: Backoff::new(h.backoff.clone(), h.backoff_jitter, h.max_retry_delay),
            guest,
        }
    }
}

impl Dispatcher {
    pub(crate) fn new(
        guest: Guest,
        js: jetstream::Context,
        telemetry: HandlerTelemetry,
        state: Option<crate::effects::State>,
    ) -> Dispatcher {
        Dispatcher {
            state,
            telemetry,
            handler: guest.handler().clone(),
            current: RwLock::new(Arc::new(Version::new(guest))),
            jet: Jet::new(js),
            stalls: Stalls::default(),
            streams: StreamCache::default(),
            throttle: Throttle::default(),
        }
    }

    /// The version new deliveries use.
    pub(crate) fn current(&self) -> Arc<Version> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Makes `guest` (a new component, new per-delivery settings, or both)
    /// the version new deliveries use.
    pub(crate) fn swap(&self, guest: Guest) {
        let old = std::mem::replace(
            &mut *self.current.write().unwrap_or_else(|e| e.into_inner()),
            Arc::new(Version::new(guest)),
        );
        old.guest.retire();
    }
}
