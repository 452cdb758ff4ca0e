//! `StackConfig` from arbitrary TOML text and arbitrary `MCP_TOWER_*` environments
//! (proptest): loading returns `Ok` or `Err` and never panics, and no error (nor the loaded
//! configuration's `Debug`) ever shows the value given as `key_secret`, however it is
//! malformed: the wrong type, a syntax error on its line, too short.
//!
//! Case counts are proptest's (256, or `PROPTEST_CASES`).
#![allow(clippy::unwrap_used, clippy::expect_used)]
// figment's Jail API returns its own (large) error type.
#![allow(clippy::result_large_err)]

use mcp_tower::StackConfig;
use proptest::prelude::*;

/// A secret-looking value: what must never be shown. Some are only digits (TOML and
/// figment's environment parsing read those as integers, and serde's type error would
/// print them).
fn secret() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z0-9_+/=-]{4,40}".prop_map(|tail| format!("sk-live-{tail}")),
        "[1-9][0-9]{11,17}",
    ]
}

/// The ways a `key_secret` line can be written, well or badly.
fn secret_line(secret: &str, form: usize) -> String {
    let s = secret;
    match form % 11 {
        0 => format!("key_secret = \"{s}\""),
        1 => format!("key_secret = '{s}'"),
        2 => format!("key_secret = {s}"),
        3 => format!("key_secret = \"{s}"),
        4 => format!("key_secret = \"\"\"{s}"),
        5 => format!("key_secret = \"{s}\" trailing"),
        6 => format!("key_secret = [\"{s}\"]"),
        7 => format!("key_secret = {{ v = \"{s}\" }}"),
        8 => format!("key_secret = \"{s}\\q\""),
        9 => format!("key_secret = \"{s}\"\nkey_secret = \"{s}\""),
        _ => format!("\"key_secret\" = \"\"\"\n{s}\n\"\"\""),
    }
}

const SECTIONS: &[&str] = &[
    "[policy]",
    "[tools.weather]",
    "[tools.\"odd name\"]",
    "[tools.\"github__*\"]",
    "[tools.\"get_?\"]",
    "[tools.\"a**\"]",
    "[tools.\"\"]",
    "[tools.\"t[0-9]\"]",
    "[metrics]",
    "[cache]",
    "[dedup]",
    "[concurrency]",
    "[retry]",
    "[retry.budget]",
    "[timeout]",
    "[http]",
    "[http.sessions]",
    "[nonsense]",
    "[[policy]]",
    "[policy",
];

const KEYS: &[&str] = &[
    "cache_ttl",
    "scope",
    "timeout",
    "max_concurrency",
    "enabled",
    "cache",
    "dedup",
    "max_bytes",
    "max_entry_bytes",
    "max_in_flight",
    "max_queued",
    "queue_timeout",
    "retry_after",
    "max_attempts",
    "base_delay",
    "multiplier",
    "deadline",
    "window",
    "ratio",
    "bind",
    "allowed_hosts",
    "allowed_origins",
    "tokens_file",
    "admin",
    "stats_window",
    "duration_buckets",
    "idle_timeout",
    "max",
    "unknown_key",
];

const VALUES: &[&str] = &[
    "\"30s\"",
    "\"0s\"",
    "\"1500ms\"",
    "\"soon\"",
    "0",
    "1",
    "-1",
    "1.5",
    "nan",
    "inf",
    "true",
    "\"public\"",
    "\"private\"",
    "\"127.0.0.1:0\"",
    "\"0.0.0.0:80\"",
    "[1, 2]",
    "[]",
    "{ a = 1 }",
    "99999999999999999999999",
    "'literal'",
    "\"unterminated",
    "",
    "1979-05-27T07:32:00Z",
];

/// One line of a document: a section header, a `key = value`, or noise.
fn line() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(SECTIONS).prop_map(str::to_owned),
        8 => (prop::sample::select(KEYS), prop::sample::select(VALUES))
            .prop_map(|(k, v)| format!("{k} = {v}")),
        1 => "\\PC{0,24}",
        1 => "[ -~]{0,24}",
    ]
}

/// A document with a `key_secret` line, well or badly written, somewhere in it.
fn document() -> impl Strategy<Value = (String, String)> {
    (
        secret(),
        any::<usize>(),
        prop::collection::vec(line(), 0..12),
        any::<prop::sample::Index>(),
    )
        .prop_map(|(secret, form, mut lines, at)| {
            let at = at.index(lines.len() + 1);
            lines.insert(at, secret_line(&secret, form));
            (lines.join("\n"), secret)
        })
}

/// What loading shows a person: the error's `Display` and `Debug`, or the configuration's
/// `Debug`.
fn shown(result: &Result<StackConfig, mcp_tower::ConfigError>) -> String {
    match result {
        Ok(cfg) => format!("{cfg:?}"),
        Err(err) => format!("{err} {err:?}"),
    }
}

/// Environment variables to set: names the stack reads (and some it does not), values
/// of every kind.
fn environment() -> impl Strategy<Value = Vec<(String, String)>> {
    let name = prop_oneof![
        Just("MCP_TOWER_POLICY__CACHE_TTL".to_owned()),
        Just("MCP_TOWER_POLICY__SCOPE".to_owned()),
        Just("MCP_TOWER_TOOLS__WEATHER__MAX_CONCURRENCY".to_owned()),
        Just("MCP_TOWER_CONCURRENCY__MAX_IN_FLIGHT".to_owned()),
        Just("MCP_TOWER_HTTP__BIND".to_owned()),
        Just("MCP_TOWER_HTTP__ALLOWED_HOSTS".to_owned()),
        Just("MCP_TOWER_RETRY__MULTIPLIER".to_owned()),
        Just("MCP_TOWER_NONSENSE".to_owned()),
        Just("MCP_TOWER_".to_owned()),
        Just("MCP_TOWER___".to_owned()),
        "MCP_TOWER_[A-Z_]{1,12}",
    ];
    let value = prop_oneof![
        prop::sample::select(VALUES).prop_map(str::to_owned),
        "[ -~]{0,16}",
    ];
    prop::collection::vec((name, value), 0..6)
}

/// The ways `MCP_TOWER_KEY_SECRET` can be written, well or badly.
fn secret_env(secret: &str, form: usize) -> String {
    match form % 6 {
        0 => secret.to_owned(),
        1 => format!("[{secret}"),
        2 => format!("{{v={secret}}}"),
        3 => format!("[\"{secret}\"]"),
        4 => format!("\"{secret}"),
        _ => secret.chars().take(12).collect(),
    }
}

proptest! {
    #[test]
    fn toml_loading_never_panics_nor_shows_the_secret((toml, secret) in document()) {
        let result = StackConfig::from_toml_str(&toml);
        let shown = shown(&result);
        prop_assert!(!shown.contains(&secret), "{toml:?} showed its secret: {shown}");
    }

    #[test]
    fn any_toml_text_loads_or_fails_cleanly(text in "\\PC{0,200}") {
        // Ok or Err, never a panic.
        let _ = StackConfig::from_toml_str(&text);
    }

    #[test]
    fn env_loading_never_panics_nor_shows_the_secret(
        vars in environment(),
        secret in secret(),
        form in any::<usize>(),
    ) {
        let mut outcome = None;
        figment::Jail::expect_with(|jail| {
            jail.clear_env();
            for (name, value) in &vars {
                jail.set_env(name, value);
            }
            jail.set_env("MCP_TOWER_KEY_SECRET", secret_env(&secret, form));
            outcome = Some(shown(&StackConfig::from_env()));
            Ok(())
        });
        let shown = outcome.expect("the jail ran");
        // The shortened form (12 characters) is a prefix of the secret: look for that.
        let needle: String = secret.chars().take(12).collect();
        prop_assert!(!shown.contains(&needle), "{vars:?} showed the secret: {shown}");
    }
}
