//! Which world a component implements, told from the names of its
//! top-level exports and imports, read from the binary before it is
//! compiled: a component of a world Wharf does not run (one built for the
//! component model's async ABI, say) would otherwise fail to compile or
//! link with an error that does not say why.
//!
//! The rules, in order:
//!
//! 1. An export of another host's async world (`wasmcloud:messaging@0.3.0`)
//!    refuses the component: wasmtime's support for that ABI is incomplete.
//! 2. The handler it exports picks the world: `handle` (or `handle-batch`)
//!    is Wharf's own (`wharf:handler`, whose version its imports tell), and each world of
//!    `Compat::ALL` (run by `super::worlds`) has its interface. None, or
//!    more than one, refuses the component, naming what Wharf accepts.
//! 3. An import of a package Wharf knows at a version it does not provide
//!    refuses the component, naming the version it does provide.

use std::path::Path;

use anyhow::bail;
use wasmparser::{Parser, Payload};

/// A world of another host that Wharf runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compat {
    /// `wasmcloud:messaging@0.2.0`: exports `handler.handle-message`.
    WasmCloudMessaging,
    /// `wasi:messaging@0.2.0-draft`: exports `incoming-handler.handle`.
    WasiMessaging,
}

impl Compat {
    pub(crate) const ALL: [Compat; 2] = [Compat::WasmCloudMessaging, Compat::WasiMessaging];

    /// The package, as `wharf check` and the logs name the world.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Compat::WasmCloudMessaging => "wasmcloud:messaging@0.2.0",
            Compat::WasiMessaging => "wasi:messaging@0.2.0-draft",
        }
    }

    /// The interface a component of this world exports.
    pub(crate) fn export(self) -> &'static str {
        match self {
            Compat::WasmCloudMessaging => "wasmcloud:messaging/handler@0.2.0",
            Compat::WasiMessaging => "wasi:messaging/incoming-handler@0.2.0-draft",
        }
    }
}

/// The other packages any world may import, which `wharf check` names.
const CAPABILITIES: [&str; 2] = ["wasi:keyvalue/", "wasi:logging/"];

/// The versions Wharf provides of each package it knows, by prefix.
const PROVIDED: [(&str, &[&str]); 5] = [
    ("wharf:handler/", &["0.1.0", "0.2.0"]),
    ("wasmcloud:messaging/", &["0.2.0"]),
    ("wasi:messaging/", &["0.2.0-draft"]),
    ("wasi:keyvalue/", &["0.2.0-draft2", "0.2.0-draft"]),
    ("wasi:logging/", &["0.1.0-draft"]),
];

/// What a component implements, as far as its names tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Detected {
    /// Another host's world, or `None` for Wharf's own.
    pub world: Option<Compat>,
    /// The other packages it imports (`CAPABILITIES`), with their versions.
    pub capabilities: Vec<String>,
}

impl Detected {
    /// The world and what else it imports, as `wharf check` prints it.
    pub(crate) fn describe(&self, world: &str) -> String {
        let mut text = world.to_string();
        if self.world.is_some() {
            text.push_str(" (compatibility)");
        }
        if !self.capabilities.is_empty() {
            text.push_str(", with ");
            text.push_str(&self.capabilities.join(", "));
        }
        text
    }
}

/// The worlds Wharf accepts, for messages.
pub(crate) fn accepted() -> String {
    let mut list = vec![
        "wharf:handler/handler@0.2.0 or @0.1.0 (exports `handle`)".to_string(),
        "wharf:handler/batch-handler@0.2.0 (exports `handle-batch`)".to_string(),
    ];
    for c in Compat::ALL {
        list.push(format!("{} (exports `{}`)", c.name(), c.export()));
    }
    list.join("; ")
}

/// Tells which world the component in `bytes` implements.
pub(crate) fn detect(handler: &str, path: &Path, bytes: &[u8]) -> anyhow::Result<Detected> {
    let (exports, imports) = names(bytes)?;
    let component = || format!("handler \"{handler}\": component {}", path.display());
    if let Some(e) = exports
        .iter()
        .find(|e| e.starts_with("wasmcloud:messaging/") && !e.ends_with("@0.2.0"))
    {
        if e.contains("@0.3.") {
            bail!(
                "{}: exports `{e}`: wasmCloud's async messaging world is not supported yet (it \
                 needs the component model's async ABI, whose support in wasmtime is still \
                 incomplete); build it for wasmcloud:messaging@0.2.0",
                component()
            );
        }
        bail!(
            "{}: exports `{e}`, a version of wasmCloud's messaging world Wharf does not run; \
             build it for wasmcloud:messaging@0.2.0",
            component()
        );
    }
    let mut found: Vec<Option<Compat>> = Vec::new();
    // `handle` and `handle-batch` are Wharf's own worlds, told apart later.
    if exports.iter().any(|e| e == "handle" || e == "handle-batch") {
        found.push(None);
    }
    found.extend(
        Compat::ALL
            .into_iter()
            .filter(|c| exports.iter().any(|e| e == c.export()))
            .map(Some),
    );
    let world = match found.as_slice() {
        [one] => *one,
        [] => bail!(
            "{}: does not implement a world Wharf runs{}; Wharf accepts {}",
            component(),
            unsupported(&exports),
            accepted()
        ),
        several => bail!(
            "{}: exports the handlers of several worlds ({}); Wharf calls one handler per \
             component, so build it for one world",
            component(),
            several
                .iter()
                .map(|w| w.map_or("wharf:handler", Compat::name))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    for i in &imports {
        for (prefix, versions) in PROVIDED {
            let Some(rest) = i.strip_prefix(prefix) else {
                continue;
            };
            let version = rest.split_once('@').map_or("", |(_, v)| v);
            if !versions.contains(&version) {
                let package = prefix.trim_end_matches('/');
                bail!(
                    "{}: imports `{i}`, a version of {package} Wharf does not provide \
                     (it provides {package}@{}); rebuild the component against that version",
                    component(),
                    versions.join(" and @")
                );
            }
        }
    }
    let mut capabilities: Vec<String> = Vec::new();
    for i in &imports {
        if let Some(prefix) = CAPABILITIES.iter().find(|p| i.starts_with(*p)) {
            let version = i.split_once('@').map_or("", |(_, v)| v);
            let package = format!("{}@{version}", prefix.trim_end_matches('/'));
            if !capabilities.contains(&package) {
                capabilities.push(package);
            }
        }
    }
    capabilities.sort();
    Ok(Detected {
        world,
        capabilities,
    })
}

/// Why a component's exports are not a handler, when they say so.
fn unsupported(exports: &[String]) -> String {
    let said = exports.iter().find_map(|e| {
        let what = if e.starts_with("wasi:http/incoming-handler@") {
            "an HTTP handler (wasi:http), not a message handler"
        } else if e.starts_with("wasi:cli/run@") {
            "a command (wasi:cli/run), not a handler: build it as a library (`cdylib`)"
        } else if e.starts_with("wasi:keyvalue/watcher@") {
            "a key-value watcher, not a message handler"
        } else if e.starts_with("wasi:messaging/incoming-handler@") {
            "another version of wasi:messaging"
        } else if e.starts_with("wharf:handler/") {
            "a handler of another Wharf world"
        } else {
            return None;
        };
        Some(format!(" (it exports `{e}`: {what})"))
    });
    said.unwrap_or_else(|| match exports {
        [] => " (it exports nothing)".to_string(),
        _ => format!(
            " (it exports {}, but not `handle`)",
            exports
                .iter()
                .map(|e| format!("`{e}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    })
}

/// The names of a component's top-level exports and imports.
fn names(bytes: &[u8]) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    let mut exports = Vec::new();
    let mut imports = Vec::new();
    // Nested modules and components have exports and imports of their own.
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload? {
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentExportSection(reader) if depth == 0 => {
                for export in reader {
                    exports.push(export?.name.name.to_string());
                }
            }
            Payload::ComponentImportSection(reader) if depth == 0 => {
                for import in reader {
                    imports.push(import?.name.name.to_string());
                }
            }
            _ => {}
        }
    }
    Ok((exports, imports))
}

#[cfg(test)]
mod tests;
