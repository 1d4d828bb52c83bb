//! A handler's component file: read, recognised, measured and compiled.
//!
//! Measuring happens before any engine exists, from the binary alone: how
//! much linear memory the component needs to start, how many core instances,
//! memories and tables one instance of it takes, and how large its
//! pre-initialised memory image is. The engine's pool and its
//! copy-on-write setting follow from these.

use std::path::Path;

use anyhow::{Context as _, bail};
use wasmparser::{Parser, Payload};

/// What one instance of a component takes, read from its binary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Footprint {
    /// Core module instances created per component instance.
    pub core_instances: u32,
    /// Linear memories defined by its modules.
    pub memories: u32,
    /// Tables defined by its modules.
    pub tables: u32,
    /// The largest initial table, in elements.
    pub table_elements: u64,
    /// Bytes of linear memory its defined memories start with, together.
    pub initial_memory: u64,
    /// Bytes of active data segments: the memory image copied into every instance.
    pub data_bytes: u64,
}

impl Footprint {
    /// Measures a component from its bytes. Counts saturate: a crafted file
    /// claiming billions of entries is refused when it compiles, not here.
    pub(crate) fn measure(bytes: &[u8]) -> anyhow::Result<Footprint> {
        let mut f = Footprint::default();
        for payload in Parser::new(0).parse_all(bytes) {
            match payload? {
                Payload::InstanceSection(reader) => {
                    f.core_instances = f.core_instances.saturating_add(reader.count())
                }
                Payload::MemorySection(reader) => {
                    for memory in reader {
                        let memory = memory?;
                        let page = 1u64 << memory.page_size_log2.unwrap_or(16);
                        f.memories = f.memories.saturating_add(1);
                        f.initial_memory = f
                            .initial_memory
                            .saturating_add(memory.initial.saturating_mul(page));
                    }
                }
                Payload::TableSection(reader) => {
                    for table in reader {
                        let table = table?;
                        f.tables = f.tables.saturating_add(1);
                        f.table_elements = f.table_elements.max(table.ty.initial);
                    }
                }
                Payload::DataSection(reader) => {
                    for data in reader {
                        let data = data?;
                        if matches!(data.kind, wasmparser::DataKind::Active { .. }) {
                            f.data_bytes = f.data_bytes.saturating_add(data.data.len() as u64);
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(f)
    }

    /// The larger of each figure, for a pool that must hold either.
    pub(crate) fn max(self, other: Footprint) -> Footprint {
        Footprint {
            core_instances: self.core_instances.max(other.core_instances),
            memories: self.memories.max(other.memories),
            tables: self.tables.max(other.tables),
            table_elements: self.table_elements.max(other.table_elements),
            initial_memory: self.initial_memory.max(other.initial_memory),
            data_bytes: self.data_bytes.max(other.data_bytes),
        }
    }
}

/// A component file read from disk and measured, not compiled yet.
pub(crate) struct ComponentFile {
    pub bytes: Vec<u8>,
    pub footprint: Footprint,
}

/// Reads a handler's component, checks it is a component (not a core
/// module), and measures it.
pub(crate) fn read(handler: &str, path: &Path) -> anyhow::Result<ComponentFile> {
    let bytes = std::fs::read(path).with_context(|| {
        format!(
            "handler \"{handler}\": field `component`: cannot read {}",
            path.display()
        )
    })?;
    if Parser::is_core_wasm(&bytes) {
        bail!(
            "handler \"{handler}\": {} is a core WebAssembly module, not a component; \
             build it for the wasm32-wasip2 target with the wharf-guest SDK",
            path.display()
        );
    }
    if !Parser::is_component(&bytes) {
        bail!(
            "handler \"{handler}\": {} is not a WebAssembly component",
            path.display()
        );
    }
    let footprint = Footprint::measure(&bytes).with_context(|| {
        format!(
            "handler \"{handler}\": {} is not a valid WebAssembly component",
            path.display()
        )
    })?;
    Ok(ComponentFile { bytes, footprint })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two instance sections that each claim 2^32 - 1 entries: measuring
    /// the file must not overflow (it panicked in debug builds).
    #[test]
    fn a_crafted_count_saturates() {
        let mut bytes = b"\0asm\x0d\x00\x01\x00".to_vec();
        for _ in 0..2 {
            bytes.extend_from_slice(&[0x02, 0x05, 0xff, 0xff, 0xff, 0xff, 0x0f]);
        }
        if let Ok(f) = Footprint::measure(&bytes) {
            assert_eq!(f.core_instances, u32::MAX);
        }
    }
}
