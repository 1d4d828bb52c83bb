//! The worlds the guest SDKs build: a component implements the world of
//! the handler its code registers (one message per call, or a batch), and
//! imports nothing from the other one.

use std::path::{Path, PathBuf};

use crate::support::*;

/// The `wharf:handler` interfaces a component imports.
fn wharf_imports(path: &Path) -> Vec<String> {
    let (imports, _) = component_names(path);
    imports
        .into_iter()
        .filter(|i| i.starts_with("wharf:handler/"))
        .collect()
}

fn exports(path: &Path) -> Vec<String> {
    component_names(path)
        .1
        .into_iter()
        .filter(|e| e.starts_with("handle"))
        .collect()
}

/// A handler of one message at a time, in every language, is a `handler`
/// component: it exports `handle` and imports `host` (and `kv` when it
/// reads or writes state), never `batch-host`.
#[test]
fn handlers_build_to_the_handler_world() {
    let components: [PathBuf; 3] = [wasm("behave"), behave_py().into(), behave_js().into()];
    for path in components {
        let what = path.display();
        assert_eq!(exports(&path), ["handle"], "{what}");
        let imports = wharf_imports(&path);
        for wanted in ["wharf:handler/host@0.2.0", "wharf:handler/kv@0.2.0"] {
            assert!(imports.iter().any(|i| i == wanted), "{what}: {imports:?}");
        }
        assert!(
            !imports.iter().any(|i| i.contains("batch-host")),
            "{what}: {imports:?}"
        );
    }
}

/// A batch handler, in every language, is a `batch-handler` component: it
/// exports `handle-batch` only and imports `batch-host`, never `host` or
/// `kv`.
#[test]
fn batch_handlers_build_to_the_batch_handler_world() {
    let components: [PathBuf; 3] = [
        wasm("behave-batch"),
        behave_batch_py().into(),
        behave_batch_js().into(),
    ];
    for path in components {
        let what = path.display();
        assert_eq!(exports(&path), ["handle-batch"], "{what}");
        let imports = wharf_imports(&path);
        assert!(
            imports
                .iter()
                .any(|i| i == "wharf:handler/batch-host@0.2.0"),
            "{what}: {imports:?}"
        );
        assert!(
            !imports
                .iter()
                .any(|i| i.starts_with("wharf:handler/host@") || i.starts_with("wharf:handler/kv@")),
            "{what}: {imports:?}"
        );
    }
}

/// A Rust handler imports only the host functions it calls: the `noop`
/// fixture no `wharf:handler` interface with functions at all, and a
/// component built for 0.1.0 keeps its 0.1.0 imports.
#[test]
fn rust_components_import_what_they_call() {
    assert_eq!(wharf_imports(&wasm("noop")), ["wharf:handler/types@0.2.0"]);
    assert_eq!(
        wharf_imports(&wasm("v01-echo")),
        ["wharf:handler/types@0.1.0", "wharf:handler/host@0.1.0"]
    );
}
