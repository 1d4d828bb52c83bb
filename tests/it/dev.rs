//! `wharf dev` as a person runs it: the real binary in a process group of
//! its own, stopped with SIGINT to the whole group as a terminal's Ctrl-C
//! does, its printed lines, the state file `wharf dlq` finds it by, and
//! `--data-dir`.

use std::io::BufRead;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::*;

/// `wharf dev` with its stdout and stderr lines kept, killed on drop.
struct Dev {
    child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

fn keep(pipe: impl std::io::Read + Send + 'static) -> Arc<Mutex<Vec<String>>> {
    let lines: Arc<Mutex<Vec<String>>> = Default::default();
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    lines
}

impl Dev {
    fn start(config: &Path, args: &[&str]) -> Dev {
        let mut child = Command::new(env!("CARGO_BIN_EXE_wharf"))
            .arg("dev")
            .arg("-c")
            .arg(config)
            .args(["--metrics-addr", "127.0.0.1:0"])
            .args(args)
            .env_remove("WHARF_LOG")
            .env_remove("NATS_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own group, like a job a shell runs in the foreground.
            .process_group(0)
            .spawn()
            .expect("spawning wharf dev");
        let stdout = keep(child.stdout.take().unwrap());
        let stderr = keep(child.stderr.take().unwrap());
        Dev {
            child,
            stdout,
            stderr,
        }
    }

    /// Waits until dev prints `needle` on stdout or stderr; fails at once,
    /// with what it printed, if dev exits first.
    async fn wait_for(&mut self, needle: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let seen = |lines: &Arc<Mutex<Vec<String>>>| {
                lines.lock().unwrap().iter().any(|l| l.contains(needle))
            };
            if seen(&self.stdout) || seen(&self.stderr) {
                return;
            }
            let exited = self.child.try_wait().unwrap();
            if exited.is_some() || tokio::time::Instant::now() > deadline {
                panic!(
                    "wharf dev did not print \"{needle}\" ({exited:?}):\n{:#?}\n{:#?}",
                    self.stdout(),
                    self.stderr()
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// SIGINT to the whole process group, as Ctrl-C in a terminal sends it.
    fn interrupt(&self) {
        let group = format!("-{}", self.child.id());
        let status = Command::new("kill")
            .args(["-INT", "--", &group])
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -INT {group} failed");
    }

    async fn exit_code(&mut self) -> Option<i32> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "wharf dev did not exit"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    fn stdout(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    fn stderr(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A config whose input stream is declared; dev adds the dead-letter and
/// output streams.
fn dev_config(dir: &Path, extra: &str) -> PathBuf {
    let mut text = format!(
        "[[stream]]\nname = \"IN\"\nsubjects = [\"in.>\"]\n{}",
        config_text_for("", vec![handler_table("test", &wasm("behave"), extra)])
    );
    text = text.replace("url = \"\"\n", "");
    write_config(dir, &text)
}

fn refused(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
}

/// Ctrl-C stops dev quietly: the handler drains and the connection closes
/// before dev stops its own server (no error or warning lines), and the
/// state file goes. While it runs, it prints its URL and the `wharf dlq`
/// line, and `wharf dlq -c` finds its server through the state file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_drains_then_stops_the_server_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let config = dev_config(dir.path(), "");
    let port = free_port();
    let mut dev = Dev::start(&config, &["--port", &port.to_string()]);
    dev.wait_for("handler running").await;
    let url = format!("nats://127.0.0.1:{port}");
    let state = dir.path().join(".wharf.toml.dev");
    assert!(std::fs::read_to_string(&state).unwrap().contains(&url));

    let client = async_nats::connect(&url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    publish(&js, "in.a", b"fine", &[("behave", "ok")]).await;
    publish(&js, "in.a", b"{}", &[("behave", "reject:no amount")]).await;
    wait_count(&js, "WHARF_DLQ_TEST", 1).await;
    wait_drained(&js, "IN", "test").await;

    let (code, out, err) = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || {
            let out = Command::new(env!("CARGO_BIN_EXE_wharf"))
                .args(["dlq", "-c"])
                .arg(&config)
                .arg("list")
                .env_remove("WHARF_LOG")
                .env_remove("NATS_URL")
                .output()
                .unwrap();
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        })
        .await
        .unwrap()
    };
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("no amount") && out.contains("1 dead-letter message(s)"),
        "{out}"
    );
    assert_eq!(
        err, "",
        "dlq prints nothing on stderr, not even the connection closing"
    );

    dev.interrupt();
    assert_eq!(dev.exit_code().await, Some(0));
    let stderr = dev.stderr();
    let loud: Vec<&String> = stderr
        .iter()
        .filter(|l| l.contains("ERROR") || l.contains("WARN"))
        .collect();
    assert!(loud.is_empty(), "{loud:#?}");
    let stdout = dev.stdout();
    let printed = |needle: &str| stdout.iter().any(|l| l.contains(needle));
    assert!(
        printed(&format!(
            "wharf dev: nats-server with JetStream at {url} (data in "
        )) && printed("removed on exit; --data-dir keeps it")
            && printed("wharf dev: stream \"IN\": created")
            && printed("wharf dev: stream \"WHARF_DLQ_TEST\": created for handler \"test\"")
            && printed(&format!(
                "wharf dev: dead letters: wharf dlq -c {} list",
                config.display()
            ))
            && printed(&format!(
                "wharf dev: test messages: wharf pub -c {} in.test '{{\"id\":{{n}}}}' --count 3",
                config.display()
            )),
        "{stdout:#?}"
    );
    assert!(!state.exists(), "the state file is removed on exit");
    assert!(refused(port), "the server is stopped");
}

/// With `--data-dir`, the streams and their messages outlive dev; a
/// second Ctrl-C during the drain exits at once (130), and still stops the
/// server and removes the state file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_dir_keeps_the_streams_and_a_second_ctrl_c_stops_everything() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dev_config(dir.path(), "timeout = \"60s\"\nack_wait = \"90s\"");
    let port = free_port();
    let args = [
        "--port",
        &port.to_string(),
        "--data-dir",
        data.to_str().unwrap(),
    ];
    let mut dev = Dev::start(&config, &args);
    dev.wait_for("handler running").await;
    let url = format!("nats://127.0.0.1:{port}");
    let js = async_nats::jetstream::new(async_nats::connect(&url).await.unwrap());
    publish(&js, "in.a", b"kept", &[("behave", "ok")]).await;
    wait_drained(&js, "IN", "test").await;
    publish(&js, "in.a", b"slow", &[("behave", "sleep:30000")]).await;
    dev.wait_for("sleeping 30000 ms").await;
    dev.interrupt();
    dev.wait_for("draining").await;
    dev.interrupt();
    assert_eq!(dev.exit_code().await, Some(130));
    assert!(refused(port), "the server is stopped");
    assert!(!dir.path().join(".wharf.toml.dev").exists());
    drop(js);

    let mut dev = Dev::start(&config, &args);
    dev.wait_for("handler running").await;
    assert!(
        dev.stdout()
            .iter()
            .any(|l| l.contains("stream \"IN\": up to date")),
        "{:#?}",
        dev.stdout()
    );
    let js = async_nats::jetstream::new(async_nats::connect(&url).await.unwrap());
    assert_eq!(count(&js, "IN").await, 2, "both messages were kept");
    dev.interrupt();
    assert_eq!(dev.exit_code().await, Some(0));
}
