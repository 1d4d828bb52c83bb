//! Connection options against servers that require them: token,
//! user/password (from the environment), and TLS with a client certificate.

use std::path::Path;
use std::process::Command;

use async_nats::jetstream;
use wharf::server::NatsServer;

use crate::support::*;

/// Runs the binary against `server` with `env`, publishes one message through
/// `js`, and checks it was processed; returns after the host is stopped.
async fn processes_one(js: &jetstream::Context, config: &Path, env: &[(&str, &str)]) {
    topology(js).await;
    let host = Binary::spawn(&["run", "-c", config.to_str().unwrap()], env);
    publish(
        js,
        "in.a",
        b"x",
        &[("behave", "ok"), ("publish-to", "out.done")],
    )
    .await;
    wait_count(js, "OUT", 1).await;
    host.signal("TERM");
    assert_eq!(host.wait().await, Some(0));
}

/// A token from `NATS_TOKEN` authenticates; without it the host refuses to start with a clear error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_from_the_environment() {
    let server = NatsServer::start_with(&["--auth", "s3cret"]).unwrap();
    let client = async_nats::ConnectOptions::with_token("s3cret".into())
        .connect(server.url())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &behave_config_text(&server.url(), ""));
    let path = config.to_str().unwrap().to_string();
    let (code, err) = tokio::task::spawn_blocking(move || run_binary(&["run", "-c", &path]))
        .await
        .unwrap();
    assert_eq!(code, 1);
    assert!(err.contains("cannot connect to NATS"), "{err}");
    processes_one(
        &jetstream::new(client),
        &config,
        &[("NATS_TOKEN", "s3cret")],
    )
    .await;
}

/// User and password from `NATS_USER` / `NATS_PASSWORD` authenticate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_and_password_from_the_environment() {
    let server = NatsServer::start_with(&["--user", "app", "--pass", "pw"]).unwrap();
    let client = async_nats::ConnectOptions::with_user_and_password("app".into(), "pw".into())
        .connect(server.url())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &behave_config_text(&server.url(), ""));
    processes_one(
        &jetstream::new(client),
        &config,
        &[("NATS_USER", "app"), ("NATS_PASSWORD", "pw")],
    )
    .await;
}

fn openssl(dir: &Path, args: &[&str]) {
    let status = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("running openssl (apt-get install openssl)");
    assert!(
        status.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&status.stderr)
    );
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, all in `dir`.
fn certificates(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=wharf-test-ca",
        ],
    );
    for (name, ext) in [
        ("server", "subjectAltName=IP:127.0.0.1"),
        ("client", "extendedKeyUsage=clientAuth"),
    ] {
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                &format!("/CN={name}"),
            ],
        );
        std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &format!("{name}.pem"),
                "-days",
                "2",
                "-extfile",
                &format!("{name}.ext"),
            ],
        );
    }
}

/// TLS with a CA and a client certificate from the config file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_client_certificate() {
    let certs = tempfile::tempdir().unwrap();
    let d = certs.path();
    certificates(d);
    let p = |f: &str| d.join(f).to_str().unwrap().to_string();
    let server = NatsServer::start_with(&[
        "--tls",
        "--tlscert",
        &p("server.pem"),
        "--tlskey",
        &p("server.key"),
        "--tlsverify",
        "--tlscacert",
        &p("ca.pem"),
    ])
    .unwrap();
    let client = async_nats::ConnectOptions::new()
        .add_root_certificates(d.join("ca.pem"))
        .add_client_certificate(d.join("client.pem"), d.join("client.key"))
        .require_tls(true)
        .connect(server.url())
        .await
        .unwrap();
    let extra = format!(
        "[nats]\ntls_ca = \"{}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
        p("ca.pem"),
        p("client.pem"),
        p("client.key")
    );
    let text = behave_config_text(&server.url(), "");
    let text = text.replacen("[nats]\n", &extra, 1);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &text);
    processes_one(&jetstream::new(client), &config, &[]).await;
}
