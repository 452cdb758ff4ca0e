//! [`TimeoutConfig`]: the `[timeout]` section of the stack's configuration.

use serde::{Deserialize, Serialize};

/// The per-attempt timeout layer's configuration.
///
/// The timeout itself is per tool: [`ToolPolicy::timeout`](mcp_tower_core::ToolPolicy),
/// which is `PolicyDefaults::timeout` (`[policy] timeout`, default `30s`) unless the tool
/// has its own (`[tools.<name>] timeout = "2m"`). A tool whose policy has no timeout is
/// never timed out.
///
/// ```toml
/// [timeout]
/// enabled = true
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TimeoutConfig {
    /// Whether attempts are timed out at all. Default `true`.
    pub enabled: bool,
}

impl Default for TimeoutConfig {
    fn default() -> Self {
        Self { enabled: true }
    }
}

impl TimeoutConfig {
    /// Turns the layer on or off.
    pub fn with_enabled(mut self, enabled: bool) -> Self {
        self.enabled = enabled;
        self
    }

    /// Checks every value (there is nothing that can be out of range today; present so
    /// every section is validated the same way).
    pub fn validate(&self) -> Result<(), crate::InvalidConfig> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects_unknown_keys() {
        let c: TimeoutConfig = toml::from_str("enabled = false").unwrap();
        assert!(!c.enabled);
        assert!(toml::from_str::<TimeoutConfig>("").unwrap().enabled);
        assert!(toml::from_str::<TimeoutConfig>("timeout = \"5s\"").is_err());
        assert!(TimeoutConfig::default().validate().is_ok());
    }
}
