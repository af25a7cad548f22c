//! Topic patterns as a pure concept: an exact topic name, or a prefix followed by a trailing `*`
//! (`news/*` matches `news/a` and `news/a/b`; `*` alone matches every topic).
//!
//! Patterns use the topic rules of [`crate::http::request::valid_topic`] (1..=128 bytes of
//! `[A-Za-z0-9._~:/-]`), plus one `*`, allowed only as the last character. The same type serves
//! token grants (what a JWT allows) and subscriptions (what a client asks for); [`Pattern::covers`]
//! decides whether a grant allows a subscription. Nothing here touches the hub.

use std::fmt;

use crate::http::request::valid_topic;

/// Longest pattern, `*` included: the topic length limit.
pub const MAX_PATTERN_LEN: usize = 128;

/// A topic name or a topic prefix with a trailing `*`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Pattern {
    /// The pattern as written (`news/*`, `news/a`, `*`): displaying it gives this back.
    text: Box<str>,
    /// `text` ends in `*`; the prefix is then `text` without it.
    wildcard: bool,
}

/// Why a string is not a pattern.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PatternError;

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "invalid topic pattern (1-128 bytes of A-Z a-z 0-9 . _ ~ : / -, `*` only at the end)",
        )
    }
}

impl std::error::Error for PatternError {}

impl Pattern {
    /// Parses `s`: a valid topic, `*`, or a valid topic followed by `*`.
    pub fn parse(s: &str) -> Result<Pattern, PatternError> {
        if s.len() > MAX_PATTERN_LEN {
            return Err(PatternError);
        }
        let (prefix, wildcard) = match s.strip_suffix('*') {
            Some(prefix) => (prefix, true),
            None => (s, false),
        };
        // The prefix of `*` is empty, which `valid_topic` refuses; every other prefix is checked
        // like a topic, which also refuses a second `*`.
        let bare_star = wildcard && prefix.is_empty();
        if !bare_star && !valid_topic(prefix) {
            return Err(PatternError);
        }
        Ok(Pattern {
            text: s.into(),
            wildcard,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// True for `prefix*` patterns, false for an exact topic.
    pub fn is_wildcard(&self) -> bool {
        self.wildcard
    }

    /// The part before the `*` (the whole name for an exact pattern; empty for `*`).
    pub fn prefix(&self) -> &str {
        if self.wildcard {
            &self.text[..self.text.len() - 1]
        } else {
            &self.text
        }
    }

    /// Whether `topic` (a valid topic name) is one of the topics this pattern names.
    pub fn matches(&self, topic: &str) -> bool {
        if self.wildcard {
            topic.starts_with(self.prefix())
        } else {
            *self.text == *topic
        }
    }

    /// Whether every topic `other` matches, `self` matches too.
    ///
    /// An exact pattern covers only itself (a wildcard always matches at least two topics). A
    /// wildcard `p*` covers `q` and `q*` exactly when `q` starts with `p`: if it does not, the
    /// topic `q` itself (or, for `*`, a one-letter topic outside `p`) is a witness against.
    pub fn covers(&self, other: &Pattern) -> bool {
        match (self.wildcard, other.wildcard) {
            (false, false) => self.text == other.text,
            (false, true) => false,
            (true, _) => other.prefix().starts_with(self.prefix()),
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// True when one of `grants` covers `wanted`.
pub fn any_covers(grants: &[Pattern], wanted: &Pattern) -> bool {
    grants.iter().any(|g| g.covers(wanted))
}

/// True when one of `grants` matches the topic `topic`.
pub fn any_matches(grants: &[Pattern], topic: &str) -> bool {
    grants.iter().any(|g| g.matches(topic))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(s: &str) -> Pattern {
        Pattern::parse(s).unwrap()
    }

    #[test]
    fn parse_table() {
        for ok in [
            "a",
            "news/*",
            "*",
            "news*",
            "a/b/c",
            &"t".repeat(128),
            &"t".repeat(127),
        ] {
            assert_eq!(
                Pattern::parse(ok).map(|x| x.to_string()),
                Ok(ok.to_string())
            );
        }
        let long_wild = format!("{}*", "t".repeat(127));
        assert!(Pattern::parse(&long_wild).is_ok());
        for bad in [
            "",
            "**",
            "a*b",
            "*a",
            "news/**",
            "a b*",
            "é*",
            &"t".repeat(129),
            &format!("{}*", "t".repeat(128)),
        ] {
            assert_eq!(Pattern::parse(bad), Err(PatternError), "{bad:?}");
        }
        assert!(!p("a").is_wildcard() && p("a*").is_wildcard());
        assert_eq!(
            (p("news/*").prefix(), p("*").prefix(), p("x").prefix()),
            ("news/", "", "x")
        );
    }

    #[test]
    fn matches_table() {
        let cases: &[(&str, &str, bool)] = &[
            ("news/*", "news/a", true),
            ("news/*", "news/a/b", true),
            ("news/*", "news/", true),
            ("news/*", "news", false),
            ("news/*", "sport", false),
            ("*", "anything", true),
            ("news", "news", true),
            ("news", "news/a", false),
            ("news*", "newsroom", true),
        ];
        for (pat, topic, want) in cases {
            assert_eq!(p(pat).matches(topic), *want, "{pat} ~ {topic}");
        }
    }

    #[test]
    fn covers_table() {
        // The example: a `news/*` token.
        let token = p("news/*");
        assert!(token.covers(&p("news/a")));
        assert!(token.covers(&p("news/*")));
        assert!(token.covers(&p("news/a/*")));
        assert!(!token.covers(&p("sport")));
        assert!(!token.covers(&p("*")));
        assert!(!token.covers(&p("news")));
        assert!(!token.covers(&p("news*")));
        assert!(p("*").covers(&p("*")) && p("*").covers(&p("x/*")) && p("*").covers(&p("x")));
        assert!(p("a").covers(&p("a")));
        assert!(!p("a").covers(&p("a*")));
        assert!(!p("a").covers(&p("b")));
        assert!(any_covers(&[p("x"), p("news/*")], &p("news/b")));
        assert!(!any_covers(&[], &p("news/b")));
        assert!(any_matches(&[p("x"), p("n*")], "news") && !any_matches(&[p("x")], "y"));
    }

    /// Topics over a small alphabet, so that random patterns and topics often relate.
    fn topic() -> impl Strategy<Value = String> {
        "[ab/]{1,6}"
    }

    fn pattern() -> impl Strategy<Value = Pattern> {
        prop_oneof![
            topic().prop_map(|t| p(&t)),
            "[ab/]{0,5}".prop_map(|t| p(&format!("{t}*"))),
        ]
    }

    /// A topic `b` matches and `a` does not, when there is one: the construction the proof in
    /// [`Pattern::covers`] uses.
    fn witness(a: &Pattern, b: &Pattern) -> Option<String> {
        let mut candidates = vec![b.prefix().to_string()];
        if b.is_wildcard() {
            for suffix in ["a", "b", "/", "aa", "ba"] {
                candidates.push(format!("{}{suffix}", b.prefix()));
            }
        }
        candidates
            .into_iter()
            .find(|t| valid_topic(t) && b.matches(t) && !a.matches(t))
    }

    proptest! {
        #[test]
        fn covers_implies_matches(a in pattern(), b in pattern(), t in topic()) {
            if a.covers(&b) && b.matches(&t) {
                prop_assert!(a.matches(&t), "{a} covers {b} but not {t}");
            }
        }

        #[test]
        fn not_covering_has_a_witness(a in pattern(), b in pattern()) {
            prop_assert_eq!(a.covers(&b), witness(&a, &b).is_none(), "{} vs {}", a, b);
        }

        #[test]
        fn covers_is_reflexive_and_transitive(a in pattern(), b in pattern(), c in pattern()) {
            prop_assert!(a.covers(&a));
            if a.covers(&b) && b.covers(&c) {
                prop_assert!(a.covers(&c));
            }
        }

        #[test]
        fn display_round_trips(a in pattern()) {
            prop_assert_eq!(Pattern::parse(&a.to_string()), Ok(a));
        }

        #[test]
        fn exact_patterns_are_topics(s in "[ -~]{0,10}") {
            let parsed = Pattern::parse(&s);
            if !s.contains('*') {
                prop_assert_eq!(parsed.is_ok(), valid_topic(&s));
            }
        }
    }
}
