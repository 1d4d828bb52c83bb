//! What a release ships: the archive `scripts/release.sh` packs, checked end
//! to end on the test build of the binary, and the versions the build names.

use std::path::Path;
use std::process::Command;

use crate::support::root;

/// Runs a command to its end and returns its standard output; panics with
/// both outputs when it fails.
fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `scripts/release.sh --binary` packs the binary, the example config and the
/// service files into an archive whose checksums verify with `sha256sum -c`;
/// unpacked, the binary runs, has left its debug info in the file beside the
/// archive and names that file, and the config is valid.
#[test]
fn the_release_archive_verifies_unpacks_and_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("dist");
    let mut script = Command::new("bash");
    script
        .arg(root().join("scripts/release.sh"))
        .arg("--binary")
        .arg(env!("CARGO_BIN_EXE_wharf"))
        .arg("--out")
        .arg(&out);
    // The variables Cargo set for this test describe this test, not the
    // script's own cargo calls.
    for (key, _) in std::env::vars() {
        if key.starts_with("CARGO_") && key != "CARGO_HOME" {
            script.env_remove(key);
        }
    }
    run(&mut script);

    let version = env!("CARGO_PKG_VERSION");
    let archive = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .find(|n| n.ends_with(".tar.gz"))
        .expect("an archive in the output directory");
    let name = archive.strip_suffix(".tar.gz").unwrap();
    assert!(name.starts_with(&format!("wharf-{version}-")), "{name}");

    let checked = run(Command::new("sha256sum")
        .arg("-c")
        .arg(format!("{name}.sha256"))
        .current_dir(&out));
    assert_eq!(
        checked,
        format!("{name}.tar.gz: OK\n{name}.debug: OK\n"),
        "the checksums cover the archive and the debug info"
    );

    let unpacked = tmp.path().join("unpacked");
    std::fs::create_dir(&unpacked).unwrap();
    run(Command::new("tar")
        .arg("-xzf")
        .arg(out.join(&archive))
        .arg("-C")
        .arg(&unpacked));
    let tree = unpacked.join(name);
    for file in [
        "wharf",
        "INSTALL.md",
        "wharf.toml",
        "systemd/wharf.service",
        "kubernetes/configmap.yaml",
        "kubernetes/deployment.yaml",
        "kubernetes/service.yaml",
        "grafana/wharf-dashboard.json",
    ] {
        assert!(
            tree.join(file).is_file(),
            "{file} is missing from the archive"
        );
    }

    let reported = run(Command::new(tree.join("wharf")).arg("--version"));
    assert!(
        reported.starts_with(&format!("wharf {version} ")),
        "{reported}"
    );
    for world in [
        "wharf:handler@0.2.0",
        "wasmcloud:messaging@0.2.0",
        "wasi:messaging@0.2.0-draft",
    ] {
        assert!(reported.contains(world), "{world} in {reported}");
    }

    let sections = run(Command::new("readelf")
        .args(["--sections", "--wide"])
        .arg(tree.join("wharf")));
    assert!(
        !sections.contains(".debug_info"),
        "the archived binary still carries its debug info"
    );
    assert!(
        sections.contains(".symtab"),
        "the archived binary lost its symbol table"
    );
    let link = run(Command::new("readelf")
        .arg("--string-dump=.gnu_debuglink")
        .arg(tree.join("wharf")));
    assert!(link.contains(&format!("{name}.debug")), "{link}");
    let debug = run(Command::new("readelf")
        .args(["--sections", "--wide"])
        .arg(out.join(format!("{name}.debug"))));
    assert!(debug.contains(".debug_info"), "{debug}");

    let config = std::fs::read_to_string(tree.join("wharf.toml")).unwrap();
    wharf::config::Config::parse(Path::new("/etc/wharf/wharf.toml"), &config)
        .expect("the archive's wharf.toml is a valid config");
}

/// The wasmtime version the build script hands the crate
/// (`WHARF_WASMTIME_VERSION`, from the build itself) is the one Cargo.lock
/// pins, which is the one the tests run.
#[test]
fn the_build_names_the_locked_wasmtime() {
    let lock = std::fs::read_to_string(root().join("Cargo.lock")).unwrap();
    let locked: Vec<&str> = lock
        .split("[[package]]")
        .filter(|p| p.lines().any(|l| l == "name = \"wasmtime\""))
        .filter_map(|p| {
            p.lines()
                .find_map(|l| l.strip_prefix("version = \"")?.strip_suffix('"'))
        })
        .collect();
    assert_eq!(locked, [env!("WHARF_WASMTIME_VERSION")]);
}
