//! Connecting to NATS: seed URLs, credentials and TLS from the connection
//! settings, and the connection's events in the log and in its state.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use async_nats::{Event, ServerAddr};
use tracing::{debug, error, info, warn};

use crate::config::Connection;

/// How long a JetStream API request may take (binding, consumer info,
/// stream look-ups): long enough for a loaded server, short enough to ask
/// again soon during an election.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);

/// The first server with stream subject transforms (partitions).
pub(crate) const SUBJECT_TRANSFORMS: (u32, u32) = (2, 10);
/// The first server with consumer priority groups (pinned clients).
pub(crate) const PRIORITY_GROUPS: (u32, u32) = (2, 11);
/// From this version on, a clustered stream checks a write's expected last
/// subject sequence as one step with the write (nats-server issue 4320):
/// before it, two conditional writes to one key racing at the leader could
/// both be stored.
pub(crate) const SERIAL_CONDITIONS: (u32, u32) = (2, 10);

/// `(major, minor)` of the connected server's version, such as `2.9.10`.
pub(crate) fn server_version(client: &async_nats::Client) -> (u32, u32) {
    version(&client.server_info().version)
}

fn version(v: &str) -> (u32, u32) {
    let mut parts = v.trim_start_matches('v').split(['.', '-']);
    let mut next = || parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    (next(), next())
}

/// What the host knows of its connection, kept current by its events.
#[derive(Debug, Default)]
pub(crate) struct LinkState {
    connected: AtomicBool,
    /// Whether the connection was ever up, to tell a reconnect from the first connect.
    ever: AtomicBool,
    reconnects: AtomicU64,
    /// Set, and notified, once the client has closed the connection.
    closed: AtomicBool,
    on_close: tokio::sync::Notify,
    /// Client errors repeat while the server is away (one per failed
    /// reconnect attempt): logged once per interval with a count.
    throttle: crate::throttle::Throttle,
}

impl LinkState {
    /// Whether the connection is up now.
    pub(crate) fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// How often the connection was re-established.
    pub(crate) fn reconnects(&self) -> u64 {
        self.reconnects.load(Ordering::Relaxed)
    }

    /// Resolves once the client has closed the connection (after a drain).
    pub(crate) async fn closed(&self) {
        if !self.closed.load(Ordering::Acquire) {
            self.on_close.notified().await;
        }
    }
}

/// A connection and the state its events keep.
pub(crate) struct Link {
    pub client: async_nats::Client,
    pub state: Arc<LinkState>,
}

/// Connects to the first reachable seed, failing fast with a message that
/// names the servers when none can be reached. Once connected, the client
/// reconnects forever, to any server of the cluster it learns about.
pub async fn connect(nats: &Connection, name: &str) -> anyhow::Result<async_nats::Client> {
    Ok(link(nats, name).await?.client)
}

pub(crate) async fn link(nats: &Connection, name: &str) -> anyhow::Result<Link> {
    let urls = nats.urls();
    let seeds = urls
        .iter()
        .map(|u| {
            u.parse::<ServerAddr>().with_context(|| {
                format!("NATS URL \"{u}\" is not valid ([nats] url, --url or NATS_URL)")
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    anyhow::ensure!(
        !seeds.is_empty(),
        "no NATS URL given ([nats] url, --url or NATS_URL)"
    );
    let state = Arc::new(LinkState::default());
    let events = state.clone();
    let mut options = async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(Duration::from_secs(5))
        // Keep reconnecting forever once connected: a server restart must not
        // need an operator.
        .max_reconnects(None)
        .event_callback(move |event| {
            let state = events.clone();
            async move { on_event(&state, event) }
        });
    if let Some(path) = &nats.credentials {
        options = options
            .credentials_file(path)
            .await
            .with_context(|| format!("reading NATS credentials file {}", path.display()))?;
    }
    if let (Some(user), Some(password)) = (&nats.user, &nats.password) {
        options = options.user_and_password(user.clone(), password.clone());
    } else if nats.user.is_some() || nats.password.is_some() {
        anyhow::bail!("NATS user and password must be given together");
    }
    if let Some(token) = &nats.token {
        options = options.token(token.clone());
    }
    if let Some(ca) = &nats.tls_ca {
        options = options.add_root_certificates(ca.clone()).require_tls(true);
    }
    if let (Some(cert), Some(key)) = (&nats.tls_cert, &nats.tls_key) {
        options = options
            .add_client_certificate(cert.clone(), key.clone())
            .require_tls(true);
    }
    let client = options.connect(seeds).await.with_context(|| {
        format!(
            "cannot connect to NATS at {}; is the server running? (set [nats] url, --url or NATS_URL)",
            urls.join(", ")
        )
    })?;
    state.connected.store(true, Ordering::Relaxed);
    state.ever.store(true, Ordering::Relaxed);
    Ok(Link { client, state })
}

fn on_event(state: &LinkState, event: Event) {
    match event {
        Event::Connected => {
            let was_up = state.connected.swap(true, Ordering::Relaxed);
            if !was_up && state.ever.swap(true, Ordering::Relaxed) {
                state.reconnects.fetch_add(1, Ordering::Relaxed);
                info!("reconnected to NATS");
            }
        }
        Event::Disconnected => {
            state.connected.store(false, Ordering::Relaxed);
            warn!("disconnected from NATS; reconnecting");
        }
        Event::LameDuckMode => {
            warn!("the NATS server entered lame duck mode; it will shut down soon")
        }
        Event::SlowConsumer(sid) => warn!(
            subscription = sid,
            "slow consumer: the client dropped messages"
        ),
        Event::ServerError(e) => error!(error = %e, "NATS server error"),
        Event::ClientError(e) => {
            if let Some(suppressed) = state.throttle.admit("client error") {
                warn!(error = %e, suppressed, "NATS client error");
            }
        }
        // The end of every command's connection: nothing to tell a person.
        Event::Draining => debug!(%event, "NATS connection"),
        Event::Closed => {
            debug!(%event, "NATS connection");
            state.closed.store(true, Ordering::Release);
            state.on_close.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_versions_compare_by_major_and_minor() {
        assert!(version("2.9.10") < SUBJECT_TRANSFORMS);
        assert!(version("2.10.22") < PRIORITY_GROUPS);
        assert!(version("2.10.22") >= SUBJECT_TRANSFORMS);
        assert!(version("2.11.0") >= PRIORITY_GROUPS);
        assert!(version("v2.12.0-RC.1") >= PRIORITY_GROUPS);
    }
}
