//! Detection from names, on components assembled byte by byte: only their
//! top-level export and import names matter here.

use super::*;

/// A section: its id, its size and its contents.
fn section(id: u8, contents: &[u8]) -> Vec<u8> {
    assert!(contents.len() < 128, "one-byte sizes only");
    let mut s = vec![id, contents.len() as u8];
    s.extend_from_slice(contents);
    s
}

fn name(n: &str) -> Vec<u8> {
    let mut v = vec![0x00, n.len() as u8];
    v.extend_from_slice(n.as_bytes());
    v
}

/// A component exporting empty instances under `exports` and importing
/// instances of an empty instance type under `imports`; `nested` is put
/// inside it as a component of its own.
fn component(exports: &[&str], imports: &[&str], nested: Option<Vec<u8>>) -> Vec<u8> {
    let mut c = b"\0asm\x0d\x00\x01\x00".to_vec();
    // One instance type with no declarations.
    c.extend(section(0x07, &[0x01, 0x42, 0x00]));
    if !imports.is_empty() {
        let mut body = vec![imports.len() as u8];
        for i in imports {
            body.extend(name(i));
            body.extend([0x05, 0x00]);
        }
        c.extend(section(0x0a, &body));
    }
    if let Some(inner) = nested {
        c.extend(section(0x04, &inner));
    }
    // One instance made of no exports, exported under every name.
    c.extend(section(0x05, &[0x01, 0x01, 0x00]));
    if !exports.is_empty() {
        let mut body = vec![exports.len() as u8];
        for e in exports {
            body.extend(name(e));
            body.extend([0x05, 0x00, 0x00]);
        }
        c.extend(section(0x0b, &body));
    }
    c
}

fn detected(exports: &[&str], imports: &[&str]) -> anyhow::Result<Detected> {
    detect("h", Path::new("h.wasm"), &component(exports, imports, None))
}

fn refusal(exports: &[&str], imports: &[&str]) -> String {
    format!("{:#}", detected(exports, imports).unwrap_err())
}

#[test]
fn the_exported_handler_picks_the_world() {
    assert_eq!(detected(&["handle"], &[]).unwrap().world, None);
    let cloud = detected(
        &["wasmcloud:messaging/handler@0.2.0"],
        &[
            "wasmcloud:messaging/types@0.2.0",
            "wasmcloud:messaging/consumer@0.2.0",
            "wasi:logging/logging@0.1.0-draft",
        ],
    )
    .unwrap();
    assert_eq!(cloud.world, Some(Compat::WasmCloudMessaging));
    assert_eq!(cloud.capabilities, ["wasi:logging@0.1.0-draft"]);
    assert_eq!(
        cloud.describe("wasmcloud:messaging@0.2.0"),
        "wasmcloud:messaging@0.2.0 (compatibility), with wasi:logging@0.1.0-draft"
    );
    let wasi = detected(
        &["wasi:messaging/incoming-handler@0.2.0-draft"],
        &[
            "wasi:messaging/types@0.2.0-draft",
            "wasi:keyvalue/store@0.2.0-draft2",
            "wasi:keyvalue/atomics@0.2.0-draft2",
        ],
    )
    .unwrap();
    assert_eq!(wasi.world, Some(Compat::WasiMessaging));
    assert_eq!(wasi.capabilities, ["wasi:keyvalue@0.2.0-draft2"]);
    // wasmCloud's own hosts provide the earlier draft of WASI key-value.
    let draft = detected(
        &["wasmcloud:messaging/handler@0.2.0"],
        &[
            "wasi:logging/logging@0.1.0-draft",
            "wasi:keyvalue/store@0.2.0-draft",
            "wasi:keyvalue/atomics@0.2.0-draft",
        ],
    )
    .unwrap();
    assert_eq!(
        draft.capabilities,
        ["wasi:keyvalue@0.2.0-draft", "wasi:logging@0.1.0-draft"]
    );
    // A Wharf handler may import WASI key-value too.
    let own = detected(&["handle"], &["wasi:keyvalue/store@0.2.0-draft2"]).unwrap();
    assert_eq!(
        own.describe("wharf:handler/handler@0.2.0"),
        "wharf:handler/handler@0.2.0, with wasi:keyvalue@0.2.0-draft2"
    );
}

#[test]
fn a_component_of_no_world_is_refused_with_the_list_of_worlds() {
    let e = refusal(&["process"], &[]);
    assert!(e.contains("handler \"h\": component h.wasm"), "{e}");
    assert!(e.contains("does not implement a world Wharf runs"), "{e}");
    assert!(e.contains("it exports `process`, but not `handle`"), "{e}");
    for world in [
        "wharf:handler/handler@0.2.0",
        "wasmcloud:messaging@0.2.0",
        "wasi:messaging@0.2.0-draft",
    ] {
        assert!(e.contains(world), "{world}: {e}");
    }
    assert!(refusal(&[], &[]).contains("it exports nothing"));
    let http = refusal(&["wasi:http/incoming-handler@0.2.2"], &[]);
    assert!(http.contains("an HTTP handler"), "{http}");
}

#[test]
fn async_worlds_other_versions_and_two_handlers_are_refused() {
    let e = refusal(
        &[
            "wasmcloud:messaging/handler@0.2.0",
            "wasmcloud:messaging/handler@0.3.0",
        ],
        &[],
    );
    assert!(
        e.contains("exports `wasmcloud:messaging/handler@0.3.0`") && e.contains("async"),
        "{e}"
    );
    let e = refusal(&["wasmcloud:messaging/handler@0.1.0"], &[]);
    assert!(
        e.contains("a version of wasmCloud's messaging world Wharf does not run")
            && !e.contains("async"),
        "{e}"
    );
    let e = refusal(
        &["wasmcloud:messaging/handler@0.2.0"],
        &["wasi:keyvalue/store@0.1.0"],
    );
    assert!(
        e.contains("imports `wasi:keyvalue/store@0.1.0`")
            && e.contains("provides wasi:keyvalue@0.2.0-draft2 and @0.2.0-draft"),
        "{e}"
    );
    let e = refusal(
        &["handle", "wasi:messaging/incoming-handler@0.2.0-draft"],
        &[],
    );
    assert!(
        e.contains("several worlds (wharf:handler, wasi:messaging@0.2.0-draft)"),
        "{e}"
    );
}

/// A nested component's exports and imports are its own, not the outer one's.
#[test]
fn only_top_level_names_count() {
    let inner = component(&["handle"], &["wasi:keyvalue/store@0.1.0"], None);
    let outer = component(&["wasmcloud:messaging/handler@0.2.0"], &[], Some(inner));
    let d = detect("h", Path::new("h.wasm"), &outer).unwrap();
    assert_eq!(d.world, Some(Compat::WasmCloudMessaging));
    assert!(d.capabilities.is_empty());
}
