//! [`ToolPattern`]: the key of a per-tool override, an exact tool name or a glob.

use std::{cmp::Ordering, fmt};

/// The characters reserved for pattern syntax mcp-tower does not have (character classes,
/// alternatives, escapes). A key holding one is rejected, so giving them a meaning later
/// cannot change what an existing configuration matches. MCP tool names do not use them
/// (the specification recommends letters, digits, `_`, `-` and `.`).
const RESERVED: [char; 5] = ['[', ']', '{', '}', '\\'];

/// The key of a per-tool override: an exact tool name, or a glob where `*` matches any run
/// of characters (none included) and `?` exactly one character.
///
/// Matching is case-sensitive and on whole names (`github__*` matches `github__search`, not
/// `my_github__search`). There are no character classes, alternatives or escapes: `[`, `]`,
/// `{`, `}` and `\` are reserved and rejected, as are an empty key and `**` (a `*` already
/// matches any run of characters, `__` included).
///
/// When several overrides match a tool, they are ordered by specificity
/// ([`ToolPattern::cmp_specificity`]), most specific first:
///
/// 1. an exact name;
/// 2. a glob with more literal characters (neither `*` nor `?`);
/// 3. then one with more `?`;
/// 4. then one with fewer `*`;
/// 5. then the lexicographically smaller pattern (by Unicode code point), so the order
///    never depends on the order in which overrides were declared.
///
/// ```
/// use mcp_tower_core::ToolPattern;
///
/// let github = ToolPattern::parse("github__*").unwrap();
/// assert!(github.is_glob());
/// assert!(github.matches("github__search"));
/// assert!(!github.matches("gitlab__search"));
///
/// let any = ToolPattern::parse("*").unwrap();
/// assert!(github.cmp_specificity(&any).is_lt(), "github__* comes first");
///
/// assert!(ToolPattern::parse("github__**").is_err());
/// assert!(ToolPattern::parse("tool[0-9]").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ToolPattern {
    source: String,
    /// Characters that are neither `*` nor `?`.
    literals: usize,
    /// How many `?`.
    singles: usize,
    /// How many `*`.
    stars: usize,
}

/// Why a key is not a valid [`ToolPattern`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ToolPatternError {
    /// The key is empty.
    #[error("a tool name or pattern must not be empty")]
    Empty,
    /// The key has `**`.
    #[error("`**` is not supported: one `*` already matches any run of characters (`__` included)")]
    DoubleStar,
    /// The key has a reserved character.
    #[error(
        "`{0}` is reserved: patterns have only `*` (any run of characters) and `?` (one \
         character), no character classes, alternatives or escapes"
    )]
    Reserved(char),
}

impl ToolPattern {
    /// Parses an override key: a glob if it has `*` or `?`, else an exact name.
    pub fn parse(key: &str) -> Result<Self, ToolPatternError> {
        if key.is_empty() {
            return Err(ToolPatternError::Empty);
        }
        if let Some(c) = key.chars().find(|c| RESERVED.contains(c)) {
            return Err(ToolPatternError::Reserved(c));
        }
        if key.contains("**") {
            return Err(ToolPatternError::DoubleStar);
        }
        let (mut literals, mut singles, mut stars) = (0, 0, 0);
        for c in key.chars() {
            match c {
                '*' => stars += 1,
                '?' => singles += 1,
                _ => literals += 1,
            }
        }
        Ok(Self {
            source: key.to_owned(),
            literals,
            singles,
            stars,
        })
    }

    /// The key as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether this is a glob (it has `*` or `?`) rather than an exact name.
    pub fn is_glob(&self) -> bool {
        self.singles + self.stars > 0
    }

    /// Whether `name` matches: equals it (an exact name), or matches the glob as a whole.
    pub fn matches(&self, name: &str) -> bool {
        #[cfg(test)]
        tests::count_match();
        if !self.is_glob() {
            return self.source == name;
        }
        glob_matches(&self.source, name)
    }

    /// Orders patterns most specific first: `Less` when `self` is more specific than
    /// `other` (see the list on [`ToolPattern`]). `Equal` only for the same pattern.
    pub fn cmp_specificity(&self, other: &Self) -> Ordering {
        self.is_glob()
            .cmp(&other.is_glob())
            .then(other.literals.cmp(&self.literals))
            .then(other.singles.cmp(&self.singles))
            .then(self.stars.cmp(&other.stars))
            .then_with(|| self.source.cmp(&other.source))
    }
}

impl fmt::Display for ToolPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl std::str::FromStr for ToolPattern {
    type Err = ToolPatternError;

    fn from_str(key: &str) -> Result<Self, Self::Err> {
        Self::parse(key)
    }
}

/// Whether `name` matches `pattern` as a whole (`*`: any run of characters, `?`: one).
///
/// Greedy with backtracking to the last `*`: O(pattern × name) at worst, with no recursion
/// and no allocation beyond the two character lists. Run once per tool name and override,
/// when the policy table derives the tool's policy, never per call.
fn glob_matches(pattern: &str, name: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let name: Vec<char> = name.chars().collect();
    let (mut p, mut n) = (0, 0);
    // The position after the last `*` seen, and the name position it was tried at.
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some('*') => {
                star = Some((p + 1, n));
                p += 1;
            }
            Some(&c) if c == '?' || c == name[n] => {
                p += 1;
                n += 1;
            }
            _ => match star {
                // Let the last `*` take one more character and retry from there.
                Some((after, taken)) => {
                    star = Some((after, taken + 1));
                    p = after;
                    n = taken + 1;
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::cell::Cell;

    thread_local! {
        static MATCHES: Cell<usize> = const { Cell::new(0) };
    }

    pub(super) fn count_match() {
        MATCHES.with(|m| m.set(m.get() + 1));
    }

    /// How many times this thread has matched a name against a pattern.
    pub(crate) fn matches_so_far() -> usize {
        MATCHES.with(Cell::get)
    }

    fn p(key: &str) -> ToolPattern {
        ToolPattern::parse(key).unwrap()
    }

    #[test]
    fn globs_match_whole_names() {
        let cases = [
            ("github__*", "github__search", true),
            ("github__*", "github__", true),
            ("github__*", "my_github__search", false),
            ("github__*", "gitlab__search", false),
            ("*", "anything", true),
            ("*__search", "github__search", true),
            ("*__search", "github__search_all", false),
            ("get_?", "get_a", true),
            ("get_?", "get_", false),
            ("get_?", "get_ab", false),
            ("a*b*c", "a_b_b_c", true),
            ("a*b*c", "a_c_b", false),
            ("*.read_*", "fs.read_file", true),
            ("?é*", "xé", true),
            ("Weather*", "weather_now", false),
            ("weather", "weather", true),
            ("weather", "weather2", false),
        ];
        for (pattern, name, expected) in cases {
            assert_eq!(p(pattern).matches(name), expected, "{pattern} ~ {name}");
        }
    }

    /// The obvious recursive matcher, to check the iterative one against.
    fn reference(pattern: &[char], name: &[char]) -> bool {
        match pattern.split_first() {
            None => name.is_empty(),
            Some(('*', rest)) => (0..=name.len()).any(|i| reference(rest, &name[i..])),
            Some((&c, rest)) => name
                .split_first()
                .is_some_and(|(&n, tail)| (c == '?' || c == n) && reference(rest, tail)),
        }
    }

    proptest::proptest! {
        #[test]
        fn matching_agrees_with_the_reference(
            pattern in "[ab_*?]{1,8}",
            name in "[ab_é]{0,10}",
        ) {
            let Ok(parsed) = ToolPattern::parse(&pattern) else {
                proptest::prop_assert!(pattern.contains("**"));
                return Ok(());
            };
            let p: Vec<char> = pattern.chars().collect();
            let n: Vec<char> = name.chars().collect();
            proptest::prop_assert_eq!(parsed.matches(&name), reference(&p, &n));
        }
    }

    #[test]
    fn invalid_keys_are_rejected() {
        assert_eq!(ToolPattern::parse(""), Err(ToolPatternError::Empty));
        assert_eq!(
            ToolPattern::parse("github__**"),
            Err(ToolPatternError::DoubleStar)
        );
        assert_eq!(ToolPattern::parse("**"), Err(ToolPatternError::DoubleStar));
        for (key, c) in [
            ("tool[0-9]", '['),
            ("a]", ']'),
            ("{a,b}", '{'),
            ("a}", '}'),
            ("a\\*", '\\'),
        ] {
            assert_eq!(ToolPattern::parse(key), Err(ToolPatternError::Reserved(c)));
        }
        // `*` alone and `*?*` are fine.
        assert!(p("*").is_glob() && p("*?*").is_glob() && !p("weather").is_glob());
    }

    #[test]
    fn specificity_orders_exact_then_literals_then_wildcards_then_text() {
        let mut keys = vec![
            "*",
            "g*",
            "github__*",
            "*__search",
            "github__search",
            "github__?*",
            "github_?_*",
            "?ithub__*",
            "git*__*",
        ];
        keys.sort_by(|a, b| p(a).cmp_specificity(&p(b)));
        assert_eq!(
            keys,
            [
                "github__search", // exact
                "github_?_*",     // 8 literals, one `?` (`?` sorts before `_`)
                "github__?*",
                "*__search", // 8 literals, no `?`, one `*` (`*` sorts before `g`)
                "github__*",
                "?ithub__*", // 7 literals
                "git*__*",   // 5 literals
                "g*",
                "*",
            ]
        );
        assert_eq!(p("a*").cmp_specificity(&p("a*")), Ordering::Equal);
    }
}
