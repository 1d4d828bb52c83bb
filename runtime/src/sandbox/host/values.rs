//! The `config` import: the handler's `[handler.config]` key/values, read-only.

use std::collections::BTreeMap;
use std::sync::Arc;

/// The key/values one handler's guests may read, shared by all its Stores.
#[derive(Debug, Clone, Default)]
pub(crate) struct Values(Arc<BTreeMap<String, String>>);

impl Values {
    pub(crate) fn new(values: BTreeMap<String, String>) -> Values {
        Values(Arc::new(values))
    }

    pub(crate) fn get(&self, key: &str) -> Option<String> {
        self.0.get(key).cloned()
    }
}
