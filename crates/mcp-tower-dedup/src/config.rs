//! [`DedupConfig`]: the deduplicator's settings, as the `[dedup]` section of the stack's
//! configuration.

use serde::{Deserialize, Serialize};

/// The deduplicator's settings. Which tools are deduplicated comes from each tool's
/// `ToolPolicy` (`dedup`: on for read-only and idempotent tools, overridable per tool with
/// `[tools.NAME] dedup = false`), not from here.
///
/// ```toml
/// [dedup]
/// enabled = true
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DedupConfig {
    /// Whether the layer deduplicates at all. `false` passes every call straight through
    /// (the stack builder may leave the layer out instead). Default `true`.
    pub enabled: bool,
}

impl Default for DedupConfig {
    fn default() -> Self {
        Self { enabled: true }
    }
}

impl DedupConfig {
    /// Turns deduplication on or off.
    pub fn with_enabled(mut self, enabled: bool) -> Self {
        self.enabled = enabled;
        self
    }

    /// Checks the settings, like every section of the stack's configuration. Every value of
    /// the one setting there is today is valid, so this never fails; it is here so that the
    /// stack validates its sections alike, and so that a setting added later is checked.
    pub fn validate(&self) -> Result<(), String> {
        Ok(())
    }
}
