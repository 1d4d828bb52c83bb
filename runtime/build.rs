//! Names the wasmtime this build embeds: sets `WHARF_WASMTIME_VERSION` (for
//! example `48.0.8`) for the crate's code, for `wharf_build_info`.
//!
//! The version comes from the build itself, not from Cargo.lock, which a
//! `cargo install` without `--locked` ignores (it resolves again and may pick
//! a newer wasmtime). Every wasmtime release pins its internal crates to its
//! own exact version (`=48.0.8`), and Cargo builds a single version per
//! semver-compatible range in one build, build dependencies included. So the
//! `wasmtime-internal-versioned-export-macros` this script is compiled with is
//! the one the embedded wasmtime was compiled with, and its
//! `versioned_suffix!()` expands to that version, dots turned into
//! underscores (`_48_0_8`). It costs no extra compilation: wasmtime itself
//! uses that macro crate, built for the host like this script.

use wasmtime_internal_versioned_export_macros::versioned_suffix;

fn main() {
    // Semver allows no `_` in a version, so turning them back into dots is
    // exact, pre-release and build parts included.
    let version = versioned_suffix!()
        .trim_start_matches('_')
        .replace('_', ".");
    println!("cargo::rustc-env=WHARF_WASMTIME_VERSION={version}");
    // The version is compiled into this script: when the macro crate changes,
    // Cargo rebuilds the script and runs it again. Nothing else in the package
    // is an input.
    println!("cargo::rerun-if-changed=build.rs");
}
