//! [`CallKey`]: the identity of a tool call, shared by the cache and the deduplicator.
//!
//! A key is a 128-bit keyed hash (SipHash-1-3, 128-bit output) of the tool name, the
//! *canonical* arguments and the partition. Canonical means that object keys are visited
//! in sorted order, so `{"a":1,"b":2}` and `{"b":2,"a":1}` are the same call. The hash is
//! computed by walking the [`serde_json::Value`] tree directly: nothing is serialized to a
//! string; the walk's small pieces (tags, lengths, numbers, short strings) are gathered in
//! a stack buffer and handed to SipHash in large blocks. The request's `_meta` is never
//! part of the key.
//!
//! The hash is keyed by a [`KeySecret`]: random per process by default, so no client can
//! craft two calls that collide; a configured secret when several processes must agree on
//! keys (a shared cache tier).

use std::{fmt, hash::Hasher, sync::OnceLock};

use rmcp::model::JsonObject;
use serde_json::Value;
use siphasher::sip128::{Hasher128, SipHasher13};

/// The 128-bit secret that keys every [`CallKey`] and principal digest.
///
/// [`KeySecret::process`] is the default: drawn once per process from the operating
/// system's random source. Use [`KeySecret::from_bytes`] when keys must agree across
/// processes. The secret is never printed (`Debug` shows a fingerprint only).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct KeySecret {
    k0: u64,
    k1: u64,
}

/// The reason a configured key secret was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a key secret must be at least {min} bytes long, got {got}")]
pub struct KeySecretTooShort {
    /// The minimum length in bytes.
    pub min: usize,
    /// The length that was given.
    pub got: usize,
}

impl KeySecret {
    /// The minimum length of a configured secret, in bytes.
    pub const MIN_LEN: usize = 16;

    /// A fresh secret from the operating system's random source.
    ///
    /// Falls back to the standard library's randomly seeded hasher if the OS source is
    /// unavailable, so it never fails.
    pub fn random() -> Self {
        let mut bytes = [0u8; 16];
        if getrandom::fill(&mut bytes).is_err() {
            use std::hash::BuildHasher;
            let state = std::collections::hash_map::RandomState::new();
            let a = state.hash_one(0xA5A5_u64);
            let b = state.hash_one(0x5A5A_u64);
            bytes[..8].copy_from_slice(&a.to_le_bytes());
            bytes[8..].copy_from_slice(&b.to_le_bytes());
        }
        Self::from_array(bytes)
    }

    /// The process-wide secret: random, drawn on first use, the same for the whole process.
    pub fn process() -> Self {
        static PROCESS: OnceLock<KeySecret> = OnceLock::new();
        *PROCESS.get_or_init(Self::random)
    }

    /// A secret derived from configured bytes (at least [`KeySecret::MIN_LEN`] long).
    ///
    /// Processes configured with the same bytes compute the same keys.
    pub fn from_bytes(secret: &[u8]) -> Result<Self, KeySecretTooShort> {
        if secret.len() < Self::MIN_LEN {
            return Err(KeySecretTooShort {
                min: Self::MIN_LEN,
                got: secret.len(),
            });
        }
        // Compress arbitrary-length input into 128 bits with a fixed domain key.
        let mut hasher = SipHasher13::new_with_keys(0x6d63_702d_746f_7765, 0x722d_6b65_792d_7631);
        hasher.write(secret);
        let h = hasher.finish128();
        Ok(Self { k0: h.h1, k1: h.h2 })
    }

    fn from_array(bytes: [u8; 16]) -> Self {
        let mut k0 = [0u8; 8];
        let mut k1 = [0u8; 8];
        k0.copy_from_slice(&bytes[..8]);
        k1.copy_from_slice(&bytes[8..]);
        Self {
            k0: u64::from_le_bytes(k0),
            k1: u64::from_le_bytes(k1),
        }
    }

    pub(crate) fn hasher(&self) -> SipHasher13 {
        SipHasher13::new_with_keys(self.k0, self.k1)
    }

    /// A keyed 128-bit digest of `bytes` in the given domain (used for principals).
    pub(crate) fn digest(&self, domain: u8, bytes: &[u8]) -> u128 {
        let mut hasher = self.hasher();
        hasher.write_u8(domain);
        hasher.write(&(bytes.len() as u64).to_le_bytes());
        hasher.write(bytes);
        hasher.finish128().as_u128()
    }
}

impl fmt::Debug for KeySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A short fingerprint tells two secrets apart without revealing either.
        let fingerprint = self.digest(0xFF, b"fingerprint") as u32;
        write!(f, "KeySecret({fingerprint:08x})")
    }
}

/// Whose results a call may share.
///
/// Results of [`CacheScope::Public`](crate::CacheScope::Public) tools are shared by
/// every caller ([`Partition::Shared`]); results of private tools only within one
/// principal ([`Partition::Principal`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Partition {
    /// Shared by every caller.
    Shared,
    /// Only for this principal.
    Principal(crate::Principal),
}

/// The identity of a tool call: tool name, canonical arguments and partition, hashed.
///
/// Two calls have the same key exactly when they name the same tool, their arguments are
/// equal as JSON values (object key order ignored; an absent `arguments` equals `{}`),
/// and they fall in the same [`Partition`]. `_meta` is not part of the key.
///
/// ```
/// use mcp_tower_core::{CallKey, KeySecret, Partition};
/// use rmcp::object;
///
/// let secret = KeySecret::random();
/// let a = CallKey::compute(&secret, "weather", Some(&object!({"city": "Oslo", "days": 3})), Partition::Shared);
/// let b = CallKey::compute(&secret, "weather", Some(&object!({"days": 3, "city": "Oslo"})), Partition::Shared);
/// assert_eq!(a, b);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct CallKey {
    // Two halves rather than a `u128`: the same 128 bits and order (high half first), but
    // aligned to 8 bytes instead of 16, so that a key does not pad every struct and future
    // that carries one (a deduplicated call's future crossed the size at which moving it
    // takes a `memcpy` call over this).
    hi: u64,
    lo: u64,
}

impl CallKey {
    /// Computes the key of a call to `tool` with `arguments` in `partition`.
    pub fn compute(
        secret: &KeySecret,
        tool: &str,
        arguments: Option<&JsonObject>,
        partition: Partition,
    ) -> Self {
        let mut hasher = Buffered::new(secret.hasher());
        hasher.write_u8(domain::CALL);
        write_str(&mut hasher, tool);
        match arguments {
            Some(map) => hash_object(&mut hasher, map),
            // Absent arguments mean the same as `{}`: rmcp hands both to the tool as an
            // empty object.
            None => write_len(&mut hasher, 0),
        }
        match partition {
            Partition::Shared => hasher.write_u8(0),
            Partition::Principal(p) => {
                hasher.write_u8(1);
                hasher.write_array(p.as_u128().to_le_bytes());
            }
        }
        Self::from_u128(hasher.finish128())
    }

    /// The 128 bits of the key.
    pub fn as_u128(&self) -> u128 {
        (u128::from(self.hi) << 64) | u128::from(self.lo)
    }

    /// Rebuilds a key from its 128 bits (for a store that persists keys).
    pub fn from_u128(bits: u128) -> Self {
        Self {
            hi: (bits >> 64) as u64,
            lo: bits as u64,
        }
    }
}

impl fmt::Debug for CallKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CallKey({:032x})", self.as_u128())
    }
}

impl fmt::Display for CallKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.as_u128())
    }
}

impl std::hash::Hash for CallKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // The key is already a uniformly distributed keyed hash: feeding 64 of its bits
        // is enough for any hash map, and lets `CallKeyHasher` pass them straight on.
        state.write_u64(self.lo);
    }
}

/// A [`Hasher`] for maps keyed by [`CallKey`]: the key is already a keyed hash, so
/// hashing it again (SipHash, as `HashMap` does by default) is wasted work.
///
/// ```
/// use std::collections::HashMap;
/// use mcp_tower_core::{CallKey, CallKeyBuildHasher};
///
/// let mut map: HashMap<CallKey, &str, CallKeyBuildHasher> = HashMap::default();
/// map.insert(CallKey::from_u128(7), "seven");
/// assert_eq!(map.get(&CallKey::from_u128(7)), Some(&"seven"));
/// ```
#[derive(Debug, Default, Clone, Copy)]
pub struct CallKeyHasher(u64);

impl Hasher for CallKeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only reached if something other than a `CallKey` is hashed: mix the bytes in
        // (FNV-1a) so the hasher stays correct, if not fast, for any input.
        let mut h = self.0 ^ 0xcbf2_9ce4_8422_2325;
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }

    fn write_u64(&mut self, n: u64) {
        self.0 ^= n;
    }
}

/// The [`std::hash::BuildHasher`] of [`CallKeyHasher`].
pub type CallKeyBuildHasher = std::hash::BuildHasherDefault<CallKeyHasher>;

mod domain {
    pub(super) const CALL: u8 = 1;
}

mod tag {
    pub(super) const NULL: u8 = 0;
    pub(super) const FALSE: u8 = 1;
    pub(super) const TRUE: u8 = 2;
    pub(super) const UINT: u8 = 3;
    pub(super) const INT: u8 = 4;
    pub(super) const FLOAT: u8 = 5;
    pub(super) const STRING: u8 = 6;
    pub(super) const ARRAY: u8 = 7;
    pub(super) const OBJECT: u8 = 8;
}

/// A SipHash fed through a stack buffer. SipHash's cost is per call as well as per byte
/// (each `write` handles a partial word); a key is a few dozen tiny writes, so gathering
/// them first saves about a sixth of the key's time (`cache/key` bench: ~140 ns to ~120 ns
/// for `sample_call`'s arguments). The byte stream, and so every key, is exactly what
/// unbuffered writes would give (SipHash is a function of the concatenated input).
struct Buffered {
    hasher: SipHasher13,
    buf: [u8; Self::CAPACITY],
    len: usize,
}

impl Buffered {
    const CAPACITY: usize = 128;

    fn new(hasher: SipHasher13) -> Self {
        Self {
            hasher,
            buf: [0; Self::CAPACITY],
            len: 0,
        }
    }

    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        if bytes.len() > Self::CAPACITY - self.len {
            self.flush();
            if bytes.len() > Self::CAPACITY {
                self.hasher.write(bytes);
                return;
            }
        }
        self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    /// A fixed-size write: one store, not a `memcpy` call.
    #[inline]
    fn write_array<const N: usize>(&mut self, bytes: [u8; N]) {
        if N > Self::CAPACITY - self.len {
            self.flush();
        }
        if let Some(slot) = self.buf.get_mut(self.len..self.len + N) {
            slot.copy_from_slice(&bytes);
            self.len += N;
        }
    }

    #[inline]
    fn write_u8(&mut self, byte: u8) {
        self.write_array([byte]);
    }

    fn flush(&mut self) {
        self.hasher.write(&self.buf[..self.len]);
        self.len = 0;
    }

    fn finish128(mut self) -> u128 {
        self.flush();
        self.hasher.finish128().as_u128()
    }
}

// Every variable-length item is written with its length first and every value with a
// type tag, so no two distinct values produce the same byte stream. Integers are written
// little-endian explicitly so keys agree across architectures.
fn write_len(hasher: &mut Buffered, len: usize) {
    hasher.write_array((len as u64).to_le_bytes());
}

fn write_str(hasher: &mut Buffered, s: &str) {
    write_len(hasher, s.len());
    hasher.write(s.as_bytes());
}

fn hash_value(hasher: &mut Buffered, value: &Value) {
    match value {
        Value::Null => hasher.write_u8(tag::NULL),
        Value::Bool(false) => hasher.write_u8(tag::FALSE),
        Value::Bool(true) => hasher.write_u8(tag::TRUE),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                hasher.write_u8(tag::UINT);
                hasher.write_array(u.to_le_bytes());
            } else if let Some(i) = n.as_i64() {
                hasher.write_u8(tag::INT);
                hasher.write_array(i.to_le_bytes());
            } else {
                // JSON has no NaN; `0.0 == -0.0` as JSON values, so they share a key.
                let f = n.as_f64().unwrap_or(0.0);
                let f = if f == 0.0 { 0.0 } else { f };
                hasher.write_u8(tag::FLOAT);
                hasher.write_array(f.to_bits().to_le_bytes());
            }
        }
        Value::String(s) => {
            hasher.write_u8(tag::STRING);
            write_str(hasher, s);
        }
        Value::Array(items) => {
            hasher.write_u8(tag::ARRAY);
            write_len(hasher, items.len());
            for item in items {
                hash_value(hasher, item);
            }
        }
        Value::Object(map) => {
            hasher.write_u8(tag::OBJECT);
            hash_object(hasher, map);
        }
    }
}

fn hash_object(hasher: &mut Buffered, map: &JsonObject) {
    write_len(hasher, map.len());
    // serde_json's map is a BTreeMap (always sorted) unless some crate in the build enables
    // `preserve_order` (then it keeps insertion order): ask the map type once, and only
    // when it does not sort, check each map in one pass and sort only when needed.
    let sorted = map_type_sorts()
        || map
            .keys()
            .zip(map.keys().skip(1))
            .all(|(a, b)| a.as_str() <= b.as_str());
    if sorted {
        for (k, v) in map {
            write_str(hasher, k);
            hash_value(hasher, v);
        }
    } else {
        let mut entries: Vec<(&String, &Value)> = map.iter().collect();
        entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
        for (k, v) in entries {
            write_str(hasher, k);
            hash_value(hasher, v);
        }
    }
}

/// Whether serde_json's map iterates in key order whatever the insertion order (it is a
/// `BTreeMap`, not `preserve_order`'s `IndexMap`), found out once per process.
fn map_type_sorts() -> bool {
    static SORTS: OnceLock<bool> = OnceLock::new();
    *SORTS.get_or_init(|| {
        let mut probe = JsonObject::new();
        probe.insert("b".to_owned(), Value::Null);
        probe.insert("a".to_owned(), Value::Null);
        probe.keys().next().map(String::as_str) == Some("a")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Principal;
    use proptest::prelude::*;
    use serde_json::json;

    fn obj(v: Value) -> JsonObject {
        match v {
            Value::Object(m) => m,
            other => panic!("not an object: {other}"),
        }
    }

    fn key(secret: &KeySecret, tool: &str, args: Value) -> CallKey {
        CallKey::compute(secret, tool, Some(&obj(args)), Partition::Shared)
    }

    /// Keys computed with a configured secret must not change between versions: processes
    /// that share a cache tier agree on keys only if they hash the same byte stream.
    #[test]
    fn keys_with_a_configured_secret_are_stable_across_versions() {
        let s = KeySecret::from_bytes(b"mcp-tower golden key secret").unwrap();
        let args = json!({
            "city": "Oslo", "units": "metric", "days": 3, "include": ["wind", "humidity"],
            "nested": {"b": [1.5, -2, null, true, false], "a": {"deep": "ünïcödé"}},
            "big": u64::MAX, "neg": i64::MIN
        });
        let shared = key(&s, "weather", args.clone());
        let private = CallKey::compute(
            &s,
            "weather",
            Some(&obj(args)),
            Partition::Principal(Principal::from_u128(42)),
        );
        let empty = CallKey::compute(&s, "t", None, Partition::Shared);
        assert_eq!(
            [shared.to_string(), private.to_string(), empty.to_string()],
            GOLDEN.map(String::from)
        );
    }

    proptest! {
        /// Buffering changes how the bytes reach SipHash, never which bytes: any sequence
        /// of writes (short ones, and ones longer than the buffer) hashes as if unbuffered.
        #[test]
        fn buffered_writes_hash_like_direct_ones(
            writes in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..600), 0..12)
        ) {
            let secret = KeySecret::from_bytes(b"buffered vs direct writes").unwrap();
            let mut buffered = Buffered::new(secret.hasher());
            let mut direct = secret.hasher();
            for bytes in &writes {
                buffered.write(bytes);
                direct.write(bytes);
            }
            prop_assert_eq!(buffered.finish128(), direct.finish128().as_u128());
        }

        /// A key is its 128 bits, in two halves: they round-trip, and keys order as the
        /// numbers do.
        #[test]
        fn keys_round_trip_and_order_as_their_bits(a in any::<u128>(), b in any::<u128>()) {
            let (ka, kb) = (CallKey::from_u128(a), CallKey::from_u128(b));
            prop_assert_eq!(ka.as_u128(), a);
            prop_assert_eq!(ka.cmp(&kb), a.cmp(&b));
            prop_assert_eq!(format!("{ka}"), format!("{a:032x}"));
        }
    }

    #[test]
    fn a_key_is_aligned_like_a_pointer() {
        assert_eq!(std::mem::size_of::<CallKey>(), 16);
        assert_eq!(std::mem::align_of::<CallKey>(), std::mem::align_of::<u64>());
    }

    const GOLDEN: [&str; 3] = [
        "e4576864eaf8d856407684f38f9f05f9",
        "4efca32beb2514ae992258d8c9f9e213",
        "06ddb5abced618d6ea554b817b855ab7",
    ];

    #[test]
    fn object_key_order_does_not_matter() {
        let s = KeySecret::random();
        let a: JsonObject = serde_json::from_str(r#"{"a":1,"b":{"y":[1,2],"x":null}}"#).unwrap();
        let b: JsonObject = serde_json::from_str(r#"{"b":{"x":null,"y":[1,2]},"a":1}"#).unwrap();
        assert_eq!(
            CallKey::compute(&s, "t", Some(&a), Partition::Shared),
            CallKey::compute(&s, "t", Some(&b), Partition::Shared)
        );
    }

    #[test]
    fn tool_name_and_partition_are_part_of_the_key() {
        let s = KeySecret::random();
        let args = obj(json!({"city": "Oslo"}));
        let a = CallKey::compute(&s, "weather", Some(&args), Partition::Shared);
        let b = CallKey::compute(&s, "forecast", Some(&args), Partition::Shared);
        let c = CallKey::compute(
            &s,
            "weather",
            Some(&args),
            Partition::Principal(Principal::from_u128(1)),
        );
        let d = CallKey::compute(
            &s,
            "weather",
            Some(&args),
            Partition::Principal(Principal::from_u128(2)),
        );
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_ne!(c, d);
    }

    #[test]
    fn empty_and_absent_arguments_are_the_same_call() {
        let s = KeySecret::random();
        assert_eq!(
            CallKey::compute(&s, "t", None, Partition::Shared),
            CallKey::compute(&s, "t", Some(&JsonObject::new()), Partition::Shared)
        );
        // ...but an empty object is not an object holding an empty object.
        assert_ne!(key(&s, "t", json!({})), key(&s, "t", json!({"": {}})));
    }

    #[test]
    fn structure_is_not_ambiguous() {
        let s = KeySecret::random();
        let pairs = [
            (json!({"a": "bc"}), json!({"ab": "c"})),
            (json!({"a": [1, 2]}), json!({"a": [[1], 2]})),
            (json!({"a": [1, [2]]}), json!({"a": [[1, 2]]})),
            (json!({"a": "1"}), json!({"a": 1})),
            (json!({"a": 1}), json!({"a": 1.0})),
            (json!({"a": -1}), json!({"a": u64::MAX})),
            (json!({"a": null}), json!({"a": false})),
            (json!({"a": {}}), json!({"a": []})),
            (json!({"a": ""}), json!({"a": null})),
        ];
        for (x, y) in pairs {
            assert_ne!(
                key(&s, "t", x.clone()),
                key(&s, "t", y.clone()),
                "{x} vs {y}"
            );
        }
    }

    #[test]
    fn large_numbers_unicode_and_floats() {
        let s = KeySecret::random();
        let values = [
            json!({"n": u64::MAX}),
            json!({"n": u64::MAX - 1}),
            json!({"n": i64::MIN}),
            json!({"n": i64::MIN + 1}),
            json!({"n": 1e308}),
            json!({"n": -1e308}),
            json!({"n": 5e-324}),
            json!({"n": 0.1}),
            json!({"n": 0.30000000000000004}),
            json!({"s": "ä"}),
            json!({"s": "a\u{308}"}),
            json!({"s": "🦀"}),
            json!({"🦀": "s"}),
        ];
        let keys: std::collections::HashSet<_> =
            values.iter().map(|v| key(&s, "t", v.clone())).collect();
        assert_eq!(keys.len(), values.len());
        // Positive and negative zero are equal JSON numbers.
        assert_eq!(
            key(&s, "t", json!({"z": 0.0})),
            key(&s, "t", json!({"z": -0.0}))
        );
    }

    #[test]
    fn secrets_separate_keys_and_configured_secrets_agree() {
        let args = obj(json!({"q": "x"}));
        let a = CallKey::compute(&KeySecret::random(), "t", Some(&args), Partition::Shared);
        let b = CallKey::compute(&KeySecret::random(), "t", Some(&args), Partition::Shared);
        assert_ne!(a, b, "two random secrets gave the same key");

        let s1 = KeySecret::from_bytes(b"0123456789abcdef-shared").unwrap();
        let s2 = KeySecret::from_bytes(b"0123456789abcdef-shared").unwrap();
        assert_eq!(
            CallKey::compute(&s1, "t", Some(&args), Partition::Shared),
            CallKey::compute(&s2, "t", Some(&args), Partition::Shared)
        );
        assert_eq!(
            KeySecret::from_bytes(b"short"),
            Err(KeySecretTooShort { min: 16, got: 5 })
        );
        assert!(!format!("{s1:?}").contains("0123456789"));
    }

    #[test]
    fn process_secret_is_stable() {
        assert_eq!(KeySecret::process(), KeySecret::process());
    }

    /// Arbitrary JSON values: nested arrays and objects, unicode strings, integers over
    /// the whole u64/i64 range and finite floats.
    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<u64>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            "\\PC{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map("\\PC{0,6}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn arb_args() -> impl Strategy<Value = JsonObject> {
        prop::collection::btree_map("\\PC{0,8}", arb_json(), 0..6)
            .prop_map(|m| m.into_iter().collect())
    }

    /// Rebuilds `value` inserting every object's entries in a shuffled order (by a
    /// permutation seed). With serde_json's sorted map this exercises the builder path;
    /// with `preserve_order` it exercises the sort in `hash_object`.
    fn reordered(value: &Value, seed: u64) -> Value {
        match value {
            Value::Object(map) => {
                let mut entries: Vec<_> = map.iter().collect();
                let n = entries.len();
                for i in (1..n).rev() {
                    let j = (seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(i as u64)
                        % (i as u64 + 1)) as usize;
                    entries.swap(i, j);
                }
                Value::Object(
                    entries
                        .into_iter()
                        .map(|(k, v)| (k.clone(), reordered(v, seed ^ n as u64)))
                        .collect(),
                )
            }
            Value::Array(items) => Value::Array(items.iter().map(|v| reordered(v, seed)).collect()),
            other => other.clone(),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn prop_independent_of_key_order(args in arb_args(), seed in any::<u64>()) {
            let s = KeySecret::process();
            let shuffled = reordered(&Value::Object(args.clone()), seed);
            let Value::Object(shuffled) = shuffled else { unreachable!() };
            prop_assert_eq!(
                CallKey::compute(&s, "tool", Some(&args), Partition::Shared),
                CallKey::compute(&s, "tool", Some(&shuffled), Partition::Shared)
            );
        }

        #[test]
        fn prop_distinct_values_give_distinct_keys(a in arb_args(), b in arb_args()) {
            let s = KeySecret::process();
            let ka = CallKey::compute(&s, "tool", Some(&a), Partition::Shared);
            let kb = CallKey::compute(&s, "tool", Some(&b), Partition::Shared);
            // serde_json's equality is JSON value equality (numbers by representation,
            // except that 0.0 == -0.0), which is exactly what the key promises.
            prop_assert_eq!(a == b, ka == kb, "a={:?} b={:?}", a, b);
        }

        #[test]
        fn prop_same_value_same_key(a in arb_args()) {
            let s = KeySecret::process();
            let copy: JsonObject = serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
            // A JSON round trip keeps values equal (floats round-trip exactly in serde_json).
            prop_assume!(copy == a);
            prop_assert_eq!(
                CallKey::compute(&s, "tool", Some(&a), Partition::Shared),
                CallKey::compute(&s, "tool", Some(&copy), Partition::Shared)
            );
        }
    }
}
