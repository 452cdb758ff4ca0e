//! No code the project emits falls inside the JSON-RPC reserved range (`-32768..=-32000`)
//! unless a specification defines it there (the 2026-07-28 MCP spec reserves
//! `-32020..=-32099` for its own codes and forbids others in it).
//!
//! Two checks: every error the layers build (through the stack, end to end), and a scan of
//! the workspace's library and binary sources and of `docs/` for a literal code in the
//! range, so a new `ErrorCode(-32077)` somewhere fails here before a client sees it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use mcp_tower::error::codes;
use rmcp::model::ErrorCode;

/// The workspace root (this crate is `crates/mcp-tower`).
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("the workspace root")
        .to_path_buf()
}

fn files_under(dir: &Path, ext: &str, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if path.is_dir() {
            // Integration tests may name a reserved code on purpose (to check it is refused).
            if name != "tests" && name != "target" && !name.starts_with('.') {
                files_under(&path, ext, out);
            }
        } else if name.ends_with(ext) {
            out.push(path);
        }
    }
}

/// Every `-32NNN` in `text` that is not part of a range (`-32768..=-32000`,
/// `-32020..-32099`), with its line number.
fn reserved_literals(text: &str) -> Vec<(usize, i32)> {
    let mut found = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let bytes = line.as_bytes();
        let mut i = 0;
        while let Some(pos) = line[i..].find("-32") {
            let start = i + pos;
            let digits_end = start
                + 1
                + bytes[start + 1..]
                    .iter()
                    .take_while(|b| b.is_ascii_digit())
                    .count();
            i = digits_end;
            if digits_end - start != 6 {
                continue; // not a five-digit number
            }
            let before = &line[..start];
            let after = &line[digits_end..];
            if before.ends_with("..") || before.ends_with("..=") || after.starts_with("..") {
                continue; // a range, not a code
            }
            if before.ends_with(|c: char| c.is_ascii_alphanumeric()) {
                continue; // part of a word (an id, a hash)
            }
            let code: i32 = line[start..digits_end].parse().expect("digits");
            if (-32768..=-32000).contains(&code) {
                found.push((number + 1, code));
            }
        }
    }
    found
}

/// Source before its first `#[cfg(test)]` (unit tests come last in every file here).
fn without_unit_tests(text: &str) -> &str {
    text.split("#[cfg(test)]").next().unwrap_or(text)
}

#[test]
fn no_source_or_doc_names_a_code_the_spec_reserves() {
    let root = workspace_root();
    let mut files = Vec::new();
    for dir in ["crates", "examples/src", "xtask", "benches"] {
        files_under(&root.join(dir), ".rs", &mut files);
    }
    files_under(&root.join("docs"), ".md", &mut files);
    files.push(root.join("README.md"));
    assert!(files.len() > 50, "the scan found too few files: {files:?}");
    let mut offenders = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let text = if file.extension().is_some_and(|e| e == "rs") {
            without_unit_tests(&text)
        } else {
            &text
        };
        for (line, code) in reserved_literals(text) {
            // docs/errors.md keeps the table of the codes used before 0.2.
            let legacy_table = file.ends_with("docs/errors.md")
                && text
                    .lines()
                    .nth(line - 1)
                    .is_some_and(|l| l.contains("(before 0.2)"));
            if !codes::is_allowed(ErrorCode(code)) && !legacy_table {
                offenders.push(format!("{}:{line}: {code}", file.display()));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "codes inside -32768..=-32000 that no specification defines:\n{}",
        offenders.join("\n")
    );
}

#[test]
fn the_scan_finds_what_it_must() {
    assert_eq!(reserved_literals("ErrorCode(-32050)"), vec![(1, -32050)]);
    assert_eq!(
        reserved_literals("x\n{\"code\": -32001, \"m\": 1}"),
        vec![(2, -32001)]
    );
    assert!(reserved_literals("-32768..=-32000 and -32020..-32099").is_empty());
    assert!(reserved_literals("-31050, -3205, -320500").is_empty());
    assert_eq!(
        reserved_literals("-32602 and -32042"),
        vec![(1, -32602), (1, -32042)]
    );
}

/// Every error the stack raises on its own, driven through the real layers: a timeout,
/// retries exhausted (wrapping it), and busy.
#[tokio::test(start_paused = true)]
async fn every_error_the_stack_raises_has_an_allowed_code() {
    use std::sync::Arc;

    use mcp_tower::{McpStack, StackConfig, ToolCall};
    use mcp_tower_core::testing::{Outcome, ScriptedService};
    use rmcp::{
        model::{Tool, ToolAnnotations},
        object,
    };
    use tower::ServiceExt;

    let tool = |name: &'static str| {
        Tool::new(name, "t", object!({"type": "object"}))
            .with_annotations(ToolAnnotations::new().read_only(true))
    };
    let inner = ScriptedService::new();
    let built = McpStack::builder()
        .config(
            StackConfig::from_toml_str(
                r#"
                [policy]
                timeout = "50ms"
                [retry]
                max_attempts = 2
                [concurrency]
                max_in_flight = 1
                max_queued = 0
                "#,
            )
            .unwrap(),
        )
        .tools([tool("slow"), tool("held")])
        .build()
        .unwrap()
        .service(inner.clone());
    let call = |name: &'static str, n: u32| {
        ToolCall::with_resolver(name, object!({ "n": n }), Arc::clone(&built.resolver))
    };
    let mut seen = Vec::new();

    // Every attempt times out: retries exhausted, wrapping the timeout.
    inner.push_for("slow", Outcome::delayed(Duration::from_secs(3600)));
    inner.push_for("slow", Outcome::delayed(Duration::from_secs(3600)));
    let exhausted = built
        .service
        .clone()
        .oneshot(call("slow", 1))
        .await
        .unwrap_err();
    let last = &exhausted.data.as_ref().unwrap()["lastError"]["code"];
    seen.push(exhausted.code);
    seen.push(ErrorCode(i32::try_from(last.as_i64().unwrap()).unwrap()));

    // One call holds the only permit; the next is turned away as busy.
    inner.push_for("held", Outcome::Pending);
    let holder = tokio::spawn(built.service.clone().oneshot(call("held", 1)));
    inner.wait_for_calls(3).await;
    let busy = built
        .service
        .clone()
        .oneshot(call("held", 2))
        .await
        .unwrap_err();
    seen.push(busy.code);
    holder.abort();
    assert!(holder.await.unwrap_err().is_cancelled());

    assert_eq!(seen.len(), 3, "{seen:?}");
    for code in &seen {
        assert!(
            codes::is_allowed(*code),
            "the stack emitted {} inside the reserved range",
            code.0
        );
    }
    assert!(seen.contains(&codes::BUSY) && seen.contains(&codes::TIMED_OUT));
    assert!(seen.contains(&codes::RETRIES_EXHAUSTED));
}
