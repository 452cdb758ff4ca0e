//! The call-key canonicaliser under hostile arguments (proptest): it never panics, a key
//! ignores object key order, and values that differ as JSON get different keys, also when
//! they differ by as little as an attacker could arrange (a value wrapped, a string split
//! differently, a number written as a float or a string, a tool name that runs into the
//! arguments).
//!
//! Case counts are proptest's (256, or `PROPTEST_CASES`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use mcp_tower_core::{CallKey, KeySecret, Partition, Principal};
use proptest::prelude::*;
use rmcp::model::JsonObject;
use serde_json::{Value, json};

fn secret() -> KeySecret {
    KeySecret::from_bytes(b"hostile keys: a fixed test secret").unwrap()
}

fn key(tool: &str, args: &JsonObject) -> CallKey {
    CallKey::compute(&secret(), tool, Some(args), Partition::Shared)
}

fn args(value: Value) -> JsonObject {
    let mut map = JsonObject::new();
    map.insert("v".into(), value);
    map
}

/// Strings an attacker would send: empty, NULs and control characters, any Unicode, and
/// long ones (past the hasher's 128-byte buffer).
fn hostile_string() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[\\x00-\\x1f\"\\\\]{0,8}",
        "\\PC{0,16}",
        ".{0,8}",
        "[a-c]{100,300}",
        any::<char>()
            .prop_flat_map(|c| (Just(c), 120usize..140))
            .prop_map(|(c, n)| { std::iter::repeat_n(c, n).collect() }),
    ]
}

/// JSON values with extreme numbers, hostile strings, deep chains and wide objects.
fn hostile_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        prop_oneof![Just(u64::MAX), Just(0u64), any::<u64>()].prop_map(Value::from),
        prop_oneof![Just(i64::MIN), Just(-1i64), any::<i64>()].prop_map(Value::from),
        prop_oneof![
            Just(f64::MAX),
            Just(f64::MIN_POSITIVE),
            Just(-0.0),
            Just(0.5),
            any::<f64>().prop_filter("JSON numbers are finite", |f| f.is_finite()),
        ]
        .prop_map(Value::from),
        hostile_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(6, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(hostile_string(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn hostile_args() -> impl Strategy<Value = JsonObject> {
    prop::collection::btree_map(hostile_string(), hostile_json(), 0..8)
        .prop_map(|m| m.into_iter().collect())
}

/// `value` rebuilt with every object's entries inserted in the order `order` draws.
fn reinserted(value: &Value, order: &mut impl Iterator<Item = usize>) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            // A Fisher–Yates shuffle driven by the drawn numbers.
            for i in (1..entries.len()).rev() {
                let j = order.next().unwrap_or(0) % (i + 1);
                entries.swap(i, j);
            }
            let mut out = serde_json::Map::new();
            for (k, v) in entries {
                out.insert(k.clone(), reinserted(v, order));
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(|v| reinserted(v, order)).collect()),
        other => other.clone(),
    }
}

/// Values that differ from `value` as JSON by a small, deliberate change.
fn near_misses(value: &Value) -> Vec<Value> {
    let mut out = vec![
        json!([value]),
        json!({"": value}),
        json!([value, null]),
        Value::String(value.to_string()),
    ];
    match value {
        Value::String(s) => {
            // Split the string differently across two array items.
            let cut = s.char_indices().nth(1).map_or(s.len(), |(i, _)| i);
            out.push(json!([&s[..cut], &s[cut..]]));
            out.push(json!([format!("{s}\u{0}")]));
            out.push(Value::String(format!("{s} ")));
        }
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                out.push(json!(u as f64 + 0.5));
                out.push(json!(u.wrapping_add(1)));
            }
            if let Some(f) = n.as_f64() {
                out.push(json!(f.to_string()));
            }
        }
        Value::Array(items) => {
            out.push(Value::Array(items.iter().rev().cloned().collect()));
            out.push(Value::Array(items.iter().skip(1).cloned().collect()));
        }
        Value::Object(map) => {
            // The same entries one level down, and one entry dropped.
            out.push(json!({"v": map}));
            let mut fewer = map.clone();
            if let Some(first) = map.keys().next().cloned() {
                fewer.remove(&first);
                out.push(Value::Object(fewer));
            }
        }
        Value::Null => out.push(json!(false)),
        Value::Bool(b) => out.push(json!(!b)),
    }
    out.retain(|v| v != value);
    out
}

proptest! {
    /// Hostile arguments never panic, and the key is a function of the value: the same
    /// after a JSON round trip (what a client sending the same call again produces).
    #[test]
    fn hostile_arguments_give_a_stable_key(args in hostile_args(), tool in hostile_string()) {
        let first = key(&tool, &args);
        prop_assert_eq!(first, key(&tool, &args));
        let text = serde_json::to_string(&args).unwrap();
        let again: JsonObject = serde_json::from_str(&text).unwrap();
        prop_assume!(again == args); // floats round-trip exactly in serde_json; be sure
        prop_assert_eq!(first, key(&tool, &again));
    }

    /// Object key order, at every depth, is not part of the key.
    #[test]
    fn a_key_ignores_object_key_order(
        args in hostile_args(),
        order in prop::collection::vec(any::<usize>(), 64),
    ) {
        let shuffled = reinserted(&Value::Object(args.clone()), &mut order.into_iter().cycle());
        let Value::Object(shuffled) = shuffled else { unreachable!("an object stays one") };
        prop_assert_eq!(key("t", &args), key("t", &shuffled));
    }

    /// A value and every near miss of it get different keys.
    #[test]
    fn near_misses_get_different_keys(value in hostile_json()) {
        let original = key("t", &args(value.clone()));
        for other in near_misses(&value) {
            prop_assert_ne!(original, key("t", &args(other.clone())), "{} vs {}", value, other);
        }
    }

    /// Where the tool name ends and the arguments begin is not ambiguous, and the
    /// partition is part of the key.
    #[test]
    fn tool_arguments_and_partition_are_separate(
        tool in hostile_string(),
        extra in hostile_string(),
        value in hostile_json(),
        principal in any::<u128>(),
    ) {
        let s = secret();
        let with_arg = args(value.clone());
        let base = CallKey::compute(&s, &tool, Some(&with_arg), Partition::Shared);
        if !extra.is_empty() {
            let longer = format!("{tool}{extra}");
            prop_assert_ne!(base, CallKey::compute(&s, &longer, Some(&with_arg), Partition::Shared));
            let mut moved = with_arg.clone();
            moved.insert(extra.clone(), Value::Null);
            prop_assert_ne!(base, CallKey::compute(&s, &longer, Some(&moved), Partition::Shared));
        }
        let private = Partition::Principal(Principal::from_u128(principal));
        prop_assert_ne!(base, CallKey::compute(&s, &tool, Some(&with_arg), private));
        // An absent `arguments` is `{}`, and nothing else.
        prop_assert_eq!(
            CallKey::compute(&s, &tool, None, Partition::Shared),
            CallKey::compute(&s, &tool, Some(&JsonObject::new()), Partition::Shared)
        );
        prop_assert_ne!(CallKey::compute(&s, &tool, None, Partition::Shared), base);
    }
}

/// The hasher recurses once per nesting level; arguments reach it parsed by serde_json,
/// whose recursion limit (128) bounds the depth. The deepest document serde_json accepts
/// hashes fine, and a deeper one never gets that far.
#[test]
fn nesting_is_bounded_by_the_json_parser() {
    let deepest = format!("{{\"v\":{}1{}}}", "[".repeat(126), "]".repeat(126));
    let parsed: JsonObject = serde_json::from_str(&deepest).unwrap();
    let k = key("t", &parsed);
    assert_eq!(k, key("t", &serde_json::from_str(&deepest).unwrap()));

    let too_deep = format!("{{\"v\":{}1{}}}", "[".repeat(10_000), "]".repeat(10_000));
    let err = serde_json::from_str::<JsonObject>(&too_deep).unwrap_err();
    assert!(err.to_string().contains("recursion limit"), "{err}");
}
