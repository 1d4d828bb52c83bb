//! The command line: subcommands, flags and their help texts.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use wharf::config::Connection;

#[derive(Parser)]
#[command(
    name = "wharf",
    version = concat!(
        env!("CARGO_PKG_VERSION"),
        " (handler worlds wharf:handler@0.2.0 and @0.1.0; compatibility worlds \
         wasmcloud:messaging@0.2.0 and wasi:messaging@0.2.0-draft, with \
         wasi:keyvalue@0.2.0-draft and -draft2 and wasi:logging@0.1.0-draft; wasmtime ",
        env!("WHARF_WASMTIME_VERSION"),
        ")"
    ),
    about = "Run WebAssembly message handlers against NATS JetStream"
)]
pub(crate) struct Cli {
    /// Log format: `text` for people, `json` (one object per line) for log shippers.
    #[arg(long, global = true, env = "WHARF_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
    #[command(subcommand)]
    pub command: Command,
}

/// The operator's HTTP listener, and reloads.
#[derive(Args)]
pub(crate) struct MetricsArg {
    /// Also reload when the config file or a component file changes (SIGHUP always reloads).
    #[arg(long)]
    pub watch: bool,
    /// Serve /metrics, /healthz and /readyz here (overrides `[runtime] metrics_addr`).
    #[arg(long, env = "WHARF_METRICS_ADDR", value_name = "ADDR", value_parser = wharf::config::parse_addr)]
    pub metrics_addr: Option<std::net::SocketAddr>,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Run the handlers as a service until SIGINT or SIGTERM.
    Run {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        nats: Connection,
        #[command(flatten)]
        metrics: MetricsArg,
    },
    /// Check the config and that every component implements the handler world, without a server.
    Check {
        #[command(flatten)]
        config: ConfigArg,
        /// Also check, on this server, that every stream exists and every
        /// dead-letter and publish subject is stored by a stream.
        #[arg(long, value_name = "URL")]
        server: Option<String>,
    },
    /// Start a local nats-server, create the streams the config needs, and run the handlers.
    Dev {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        metrics: MetricsArg,
        /// The local server's client port (default: 4222 when free, else any
        /// free port; 0 for any free port).
        #[arg(long)]
        port: Option<u16>,
        /// Keep the local server's data in this directory between runs
        /// (default: a temporary directory, removed on exit).
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Publish test messages to JetStream, waiting for each PubAck.
    ///
    /// Example: wharf pub payments.new '{"id":{n}}' --count 3 --header X-Test:yes
    Pub {
        /// The subject; a stream must store it.
        subject: String,
        /// The payload (`-`: read it from stdin; default: empty). `{n}` becomes
        /// the message's number, from 1.
        #[arg(allow_hyphen_values = true)]
        payload: Option<String>,
        /// A header, NAME:VALUE (repeatable; `{n}` as in the payload).
        #[arg(short = 'H', long = "header", value_name = "NAME:VALUE", value_parser = wharf::publish::parse_header)]
        headers: Vec<(String, String)>,
        /// How many messages to publish.
        #[arg(short = 'n', long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
        count: u64,
        /// A configuration file, for its [nats] table or the `wharf dev`
        /// running with it (default: wharf.toml, when there is one).
        #[arg(short, long)]
        config: Option<PathBuf>,
        #[command(flatten)]
        nats: Connection,
    },
    /// Create or verify the streams the config declares in [[stream]] tables.
    Streams {
        #[command(subcommand)]
        action: StreamsAction,
    },
    /// Inspect, replay or purge dead-letter messages.
    Dlq {
        /// The configuration file; the handler's `dead_letter` subject locates the
        /// copies. Without --url, NATS_URL or [nats] url, a `wharf dev` running
        /// with this config is used.
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// The handler whose dead-letters to use (needed when the config has several).
        #[arg(long)]
        handler: Option<String>,
        /// Use this dead-letter stream directly instead of a config.
        #[arg(long, conflicts_with_all = ["config", "handler"])]
        stream: Option<String>,
        #[command(flatten)]
        nats: Connection,
        #[command(subcommand)]
        action: DlqAction,
    },
}

#[derive(Subcommand)]
pub(crate) enum StreamsAction {
    /// Create the declared streams that are missing and verify the others;
    /// then check that every handler's stream, dead-letter and publish
    /// subjects are covered.
    Apply {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        nats: Connection,
        /// Change existing streams whose settings differ from their
        /// [[stream]] table (without it, they are reported and left alone).
        #[arg(long)]
        update: bool,
    },
}

#[derive(Subcommand)]
pub(crate) enum DlqAction {
    /// One line per dead-letter message: sequence, source subject, kind, deliveries, time, reason.
    List,
    /// Every header and a payload preview of one message.
    Show {
        /// The message's sequence in the dead-letter stream.
        seq: u64,
    },
    /// Republish messages to their original subject with a new Nats-Msg-Id.
    Replay {
        /// `all`, a sequence (7), a range (3-9) or a list (1,4,10-12).
        selector: String,
        /// Delete each dead-letter message once its replay is confirmed.
        #[arg(long)]
        remove: bool,
    },
    /// Delete messages from the dead-letter stream.
    Purge {
        /// `all`, a sequence (7), a range (3-9) or a list (1,4,10-12).
        selector: String,
    },
}

#[derive(Args)]
pub(crate) struct ConfigArg {
    /// The configuration file.
    #[arg(short, long, default_value = "wharf.toml")]
    pub config: PathBuf,
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    /// The connection flags are accepted after a subcommand's own subcommand.
    #[test]
    fn connection_flags_go_anywhere() {
        let cli = Cli::try_parse_from([
            "wharf",
            "dlq",
            "-c",
            "run.toml",
            "--handler",
            "totals",
            "list",
            "--url",
            "nats://h:4222",
            "--token",
            "t",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        let Command::Dlq { nats, action, .. } = cli.command else {
            panic!("not dlq");
        };
        assert!(matches!(action, DlqAction::List));
        assert_eq!(nats.url.as_deref(), Some("nats://h:4222"));
        assert_eq!(nats.token.as_deref(), Some("t"));
        let cli = Cli::try_parse_from(["wharf", "streams", "apply", "--url", "nats://s"])
            .unwrap_or_else(|e| panic!("{e}"));
        let Command::Streams {
            action: StreamsAction::Apply { nats, .. },
        } = cli.command
        else {
            panic!("not streams apply");
        };
        assert_eq!(nats.url.as_deref(), Some("nats://s"));
    }

    /// `pub` takes repeated headers, a count and a payload that starts with `-`.
    #[test]
    fn pub_arguments() {
        let cli = Cli::try_parse_from([
            "wharf", "pub", "in.a", "-", "--header", "A: 1", "-H", "B:{n}", "--count", "3",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        let Command::Pub {
            subject,
            payload,
            headers,
            count,
            ..
        } = cli.command
        else {
            panic!("not pub");
        };
        assert_eq!((subject.as_str(), payload.as_deref()), ("in.a", Some("-")));
        assert_eq!(
            headers,
            [("A".into(), "1".into()), ("B".into(), "{n}".into())]
        );
        assert_eq!(count, 3);
        assert!(Cli::try_parse_from(["wharf", "pub", "in.a", "--count", "0"]).is_err());
    }
}
