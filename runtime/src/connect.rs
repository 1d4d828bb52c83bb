//! Connecting to NATS with the configured URL, credentials and TLS.

use std::time::Duration;

use anyhow::Context as _;

use crate::config::NatsConfig;

/// The URL used when neither the config nor `NATS_URL` names one.
pub const DEFAULT_URL: &str = "nats://127.0.0.1:4222";

/// Connects, failing fast with a message that names the server when it cannot be reached.
pub async fn connect(nats: &NatsConfig, name: &str) -> anyhow::Result<async_nats::Client> {
    let url = nats.url.clone().unwrap_or_else(|| DEFAULT_URL.to_string());
    let mut options = async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(Duration::from_secs(5))
        // Keep reconnecting forever once connected: a server restart must not
        // need an operator.
        .max_reconnects(None);
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
    options.connect(url.as_str()).await.with_context(|| {
        format!("cannot connect to NATS at {url}; is the server running? (set [nats] url, --url or NATS_URL)")
    })
}
