//! Per-tool overrides by glob through the whole stack: `[tools."github__*"]` from TOML and
//! `tool_override` from code, merged field by field, most specific first; a glob never makes
//! a made-up tool name cacheable.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{sync::Arc, time::Duration};

use mcp_tower::{CacheScope, McpStack, StackConfig, ToolCall, ToolOverride};
use mcp_tower_core::testing::ScriptedService;
use rmcp::{
    model::{Tool, ToolAnnotations},
    object,
};
use tower::ServiceExt;

const CONFIG: &str = r#"
[tools."*"]
timeout = "2s"

[tools."github__*"]
cache_ttl = "5m"
scope = "public"
max_concurrency = 4

[tools.github__search]
cache_ttl = "10s"
"#;

fn tool(name: &'static str, read_only: bool) -> Tool {
    Tool::new(name, "test tool", object!({"type": "object"}))
        .with_annotations(ToolAnnotations::new().read_only(read_only))
}

fn stack(inner: &ScriptedService) -> mcp_tower::BuiltStack {
    McpStack::builder()
        .config(StackConfig::from_toml_str(CONFIG).unwrap())
        .tool_override(
            "github__issues",
            ToolOverride::default().with_scope(CacheScope::Private),
        )
        .tool_override(
            "slack__*",
            ToolOverride::default().with_cache_ttl(Duration::from_secs(60)),
        )
        .tools([
            tool("github__search", true),
            tool("github__issues", true),
            tool("github__repos", true),
            tool("slack__post", false),
            tool("local", false),
        ])
        .build()
        .unwrap()
        .service(inner.clone())
}

#[test]
fn the_file_and_code_overrides_merge_field_by_field_most_specific_first() {
    let built = stack(&ScriptedService::new());
    let table = built.resolver.policies();

    let search = table.resolve("github__search");
    assert_eq!(search.cache_ttl, Some(Duration::from_secs(10)), "exact");
    assert_eq!(search.scope, CacheScope::Public, "github__*");
    assert_eq!(search.max_concurrency, Some(4), "github__*");
    assert_eq!(search.timeout, Some(Duration::from_secs(2)), "*");

    let issues = table.resolve("github__issues");
    assert_eq!(
        issues.scope,
        CacheScope::Private,
        "the exact override from code"
    );
    assert_eq!(
        issues.cache_ttl,
        Some(Duration::from_secs(300)),
        "github__*"
    );

    let repos = table.resolve("github__repos");
    assert_eq!(repos.cache_ttl, Some(Duration::from_secs(300)));
    assert_eq!(repos.scope, CacheScope::Public);

    // A glob from code; the tool is not read-only, so only the override caches it.
    let slack = table.resolve("slack__post");
    assert_eq!(slack.cache_ttl, Some(Duration::from_secs(60)));
    assert_eq!(slack.max_concurrency, None);
    assert_eq!(slack.timeout, Some(Duration::from_secs(2)));

    let local = table.resolve("local");
    assert!(!local.cacheable());
    assert_eq!(
        local.timeout,
        Some(Duration::from_secs(2)),
        "`*` reaches every tool"
    );
}

#[tokio::test]
async fn a_glob_caches_known_tools_and_never_a_made_up_name() {
    let inner = ScriptedService::new();
    let built = stack(&inner);
    let call = |tool: &str| {
        let call = ToolCall::with_resolver(
            tool.to_owned(),
            object!({"q": "rust"}),
            Arc::clone(&built.resolver),
        );
        built.service.clone().oneshot(call)
    };
    for _ in 0..3 {
        call("github__repos").await.unwrap();
    }
    assert_eq!(
        inner.calls_for_tool("github__repos"),
        1,
        "cached by the glob"
    );

    let known = built.resolver.policies().tool_names().len();
    for i in 0..100 {
        let name = format!("github__made_up_{}", i % 10);
        call(&name).await.unwrap();
    }
    assert_eq!(
        inner.calls(),
        101,
        "no made-up name was cached, though `github__*` matches it"
    );
    assert_eq!(built.resolver.policies().tool_names().len(), known);
}

#[test]
fn an_invalid_glob_from_code_fails_the_build_naming_the_key() {
    let err = McpStack::builder()
        .tool_override("github__**", ToolOverride::default().with_cache(true))
        .build()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid mcp-tower configuration: tools.\"github__**\": `**` is not supported: one \
         `*` already matches any run of characters (`__` included)"
    );
}

proptest::proptest! {
    /// Whatever the keys, a configuration either fails validation because a key is not a
    /// valid pattern, or builds a policy table (which panics on an invalid key) cleanly.
    #[test]
    fn validation_guards_every_key_the_table_would_refuse(
        keys in proptest::collection::vec("[a-z_*?\\[\\]{}\\\\.]{0,6}", 1..5),
    ) {
        let mut config = StackConfig::default();
        for key in &keys {
            config
                .tools
                .insert(key.clone(), ToolOverride::default().with_cache(true));
        }
        let invalid = keys.iter().any(|k| mcp_tower::ToolPattern::parse(k).is_err());
        match config.validate() {
            Ok(()) => {
                proptest::prop_assert!(!invalid);
                let table = mcp_tower::PolicyTable::default()
                    .with_overrides(&config.tools)
                    .with_tools([tool("ab", false)]);
                proptest::prop_assert!(table.resolve("ab").tool.is_some());
            }
            Err(err) => {
                proptest::prop_assert!(invalid, "{err}");
                proptest::prop_assert!(err.to_string().contains("tools."), "{err}");
            }
        }
    }
}
