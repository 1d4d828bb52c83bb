//! How to reach NATS: one type for the `[nats]` table, the command-line
//! flags and the `NATS_*` environment variables.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The URL used when neither the config nor `NATS_URL` names one.
pub const DEFAULT_URL: &str = "nats://127.0.0.1:4222";

/// Connection settings. In a config file they form the `[nats]` table; on
/// the command line each is a flag that also reads its `NATS_*` variable,
/// and overrides the file; the flags are global, so they may follow a
/// subcommand's own subcommand (`wharf dlq … list --url …`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct Connection {
    /// Server URL, or a comma-separated list of seed URLs.
    #[arg(long, global = true, env = "NATS_URL")]
    pub url: Option<String>,
    /// Credentials (.creds) file.
    #[arg(long = "creds", global = true, env = "NATS_CREDS")]
    pub credentials: Option<PathBuf>,
    /// User name (with --password).
    #[arg(long, global = true, env = "NATS_USER")]
    pub user: Option<String>,
    /// Password (with --user).
    #[arg(long, global = true, env = "NATS_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// Authentication token.
    #[arg(long, global = true, env = "NATS_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// CA certificate to verify the server with (enables TLS).
    #[arg(long, global = true, env = "NATS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (with --tls-key).
    #[arg(long, global = true, env = "NATS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// Client key (with --tls-cert).
    #[arg(long, global = true, env = "NATS_KEY")]
    pub tls_key: Option<PathBuf>,
}

impl Connection {
    /// These settings with every one that `over` sets replaced by its value.
    pub fn overlaid(self, over: Connection) -> Connection {
        Connection {
            url: over.url.or(self.url),
            credentials: over.credentials.or(self.credentials),
            user: over.user.or(self.user),
            password: over.password.or(self.password),
            token: over.token.or(self.token),
            tls_ca: over.tls_ca.or(self.tls_ca),
            tls_cert: over.tls_cert.or(self.tls_cert),
            tls_key: over.tls_key.or(self.tls_key),
        }
    }

    /// File paths resolved against `base` (the config file's directory).
    pub(super) fn resolved(self, base: &Path) -> Connection {
        let resolve = |p: Option<PathBuf>| p.map(|p| super::resolve_path(base, p));
        Connection {
            credentials: resolve(self.credentials),
            tls_ca: resolve(self.tls_ca),
            tls_cert: resolve(self.tls_cert),
            tls_key: resolve(self.tls_key),
            ..self
        }
    }

    /// The seed URLs, in order.
    pub fn urls(&self) -> Vec<String> {
        let url = self.url.as_deref().unwrap_or(DEFAULT_URL);
        url.split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(str::to_string)
            .collect()
    }
}
